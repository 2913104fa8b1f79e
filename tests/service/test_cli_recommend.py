"""``hpscale recommend`` with the published laws."""

from __future__ import annotations

import math

import pytest
from support import hp, hp_json


def test_steplaw_is_the_default_and_matches_the_paper(cli_env) -> None:
    out = hp_json("recommend", "--params", "7e9", "--tokens", "1.4e12")
    n, d = 7e9, 1.4e12
    assert out["law"] == "steplaw"
    assert out["lr"] == pytest.approx(1.79 * n**-0.713 * d**0.307, rel=1e-9)
    assert out["batch_tokens"] == pytest.approx(0.58 * d**0.571, rel=1e-9)
    assert out["batch_size"] == 2441 and out["batch_tokens"] / 2048 == pytest.approx(2440.83, abs=0.01)
    assert out["seq_len"] == 2048
    assert "Predictable Scale" in out["source"]


def test_deepseek_uses_six_n_d_unless_compute_is_given(cli_env) -> None:
    out = hp_json("recommend", "--params", "7e9", "--tokens", "1.4e12", "--law", "deepseek", "--seq-len", "4096")
    c = 6 * 7e9 * 1.4e12
    assert out["lr"] == pytest.approx(0.3118 * c**-0.125, rel=1e-9)
    assert out["batch_tokens"] == pytest.approx(0.2920 * c**0.3271, rel=1e-9)
    assert out["batch_size"] == round(out["batch_tokens"] / 4096)
    given = hp_json("recommend", "--params", "7e9", "--tokens", "1.4e12", "--law", "deepseek", "--compute", "1e23")
    assert given["lr"] == pytest.approx(0.3118 * 1e23**-0.125, rel=1e-9)
    assert given["compute"] == 1e23


def test_compute_alone_sets_tokens(cli_env) -> None:
    out = hp_json("recommend", "--params", "1e9", "--compute", "6e19")
    assert out["tokens"] == pytest.approx(1e10)


def test_human_output_names_law_and_source(cli_env) -> None:
    result = hp("recommend", "--params", "7e9", "--tokens", "1.4e12")
    assert result.exit_code == 0
    assert "peak learning rate" in result.stdout and "Step Law" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "-1", "--tokens", "1e9"], "n_params must be"),
        (["--params", "1e9"], "give tokens"),
        (["--params", "1e9", "--tokens", "0"], "tokens must be"),
        (["--params", "nan", "--tokens", "1e9"], "n_params must be"),
        (["--params", "1e9", "--tokens", "1e9", "--law", "nope"], "no law 'nope'"),
        (["--params", "1e9", "--tokens", "1e9", "--seq-len", "0"], "seq_len must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(cli_env, args, message) -> None:
    result = hp("recommend", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_non_number_is_a_usage_error(cli_env) -> None:
    result = hp("recommend", "--params", "seven", "--tokens", "1e9")
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_counts_are_read_as_people_write_them(cli_env) -> None:
    plain = hp_json("recommend", "--params", "7e9", "--tokens", "1.4e12")
    assert hp_json("recommend", "--params", "7B", "--tokens", "1.4T") == plain
    assert hp_json("recommend", "-N", "7,000,000,000", "-D", "1400g") == plain
    assert hp_json("recommend", "--params", "125M", "--compute", "1.5e21")["n_params"] == 125e6
    result = hp("recommend", "--params", "7X", "--tokens", "1.4T")
    assert result.exit_code == 2 and "'7X' is not a number" in result.stderr and "Traceback" not in result.stderr


def test_human_output_gives_whole_sequences_beside_the_exact_tokens(cli_env) -> None:
    out = hp("recommend", "--params", "7e9", "--tokens", "1.4e12").stdout
    # 0.58 D^0.571 = 4,998,815 tokens = 2440.83 sequences of 2048: 2,441 (as the web UI shows it).
    assert "4,998,815" in out and "2,441" in out and "rounded to the nearest whole sequence" in out
    assert "outside the law's data" not in out  # a published law: no data range, no factor


def test_a_given_compute_is_where_the_extrapolation_is_measured(cli_env) -> None:
    # DeepSeek's data reach C = 2e19; asked at C = 1e21 (not 6ND = 1.2e18), the answer is 50x out.
    rec = hp_json("recommend", "--params", "1e8", "--tokens", "2e9", "--compute", "1e21", "--law", "deepseek")
    assert rec["extrapolation_factor"] == pytest.approx(50.0, rel=1e-6)
    assert any("50x outside" in w for w in rec["warnings"])
    assert any("is 833x 6 N D (1.2e+18): law deepseek answers at C" in w for w in rec["warnings"])
    # Step Law answers at N and D whatever C was said, and says that too.
    rec = hp_json("recommend", "--params", "1e8", "--tokens", "2e9", "--compute", "1e21", "--law", "steplaw")
    assert any("law steplaw answers at N and D, not at C" in w for w in rec["warnings"])
    plain = hp_json("recommend", "--params", "1e8", "--tokens", "2e9", "--law", "steplaw")
    assert not any("compute given" in w for w in plain["warnings"])
