"""``python -m service.cli`` runs the hpscale CLI (for machines where it is not installed)."""

from hpscale.service.cli import app

app(prog_name="hpscale")
