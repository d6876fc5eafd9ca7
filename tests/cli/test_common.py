"""What the subcommands share (matcher.cli.common): --device / --config into a MatcherConfig, clear errors for bad
config files, -v / -q through logging, and those options on every subcommand that runs models."""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pytest

from matcher.cli import build_parser, main
from matcher.cli.common import ConfigError, add_model_arguments, config_from_args, configure_logging
from matcher.cli.main import COMMANDS


def _args(tmp_path, config: object = None, device: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    argv = [] if device is None else ["--device", device]
    if config is not None:
        path = tmp_path / "cfg.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config), encoding="utf-8")
        argv += ["--config", str(path)]
    return p.parse_args(argv)


def test_config_file_base_overrides_and_device_in_that_order(tmp_path):
    args = _args(tmp_path, {"top_k": 3, "local": {"ratio": 0.8, "query_regions": ["full", "grid2"]},
                            "pipeline": {"candidates": 7}}, device="cpu")
    base = {"threshold": 0.3, "local": {"ratio": 0.9, "max_keypoints": 512}, "top_k": 1}
    cfg = config_from_args(args, base, overrides={"pipeline": {"candidates": 9}})
    assert (cfg.threshold, cfg.top_k, cfg.local.ratio, cfg.local.max_keypoints) == (0.3, 3, 0.8, 512)
    assert cfg.local.query_regions == ("full", "grid2") and cfg.pipeline.candidates == 9
    assert cfg.device == "cpu" and cfg.detector.device == "cpu"
    assert config_from_args(_args(tmp_path)).to_dict() == config_from_args(_args(tmp_path), {}).to_dict()


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", r"not valid JSON \(line 1, column 2"),
    ("[1, 2]", "must be a JSON object of MatcherConfig settings, got list"),
    ({"topk": 3}, r"unknown key 'topk' \(known: .*top_k"),
    ({"local": {"ratioo": 0.8}}, r"unknown key 'local.ratioo'"),
    ({"local": 5}, r"'local' must be an object of LocalConfig settings, got 5"),
    ({"top_k": "ten"}, r"'top_k' must be an integer, got \"ten\""),
    ({"local": {"mirror": 1}}, r"'local.mirror' must be true or false, got 1"),
    ({"pipeline": {"query_regions": ["full", 3]}}, r"'pipeline.query_regions' must be a list of strings, got \[\"full\", 3\]"),
    ({"descriptor": {"gate_margin": "x"}}, r"'descriptor.gate_margin' must be a number or null, got \"x\""),
])
def test_bad_config_file_names_the_file_and_the_problem(tmp_path, content, problem):
    with pytest.raises(ConfigError, match=rf"cfg.json: .*{problem}"):
        config_from_args(_args(tmp_path, content))


def test_good_config_values_of_every_kind_pass(tmp_path):
    cfg = config_from_args(_args(tmp_path, {"threshold": 1, "descriptor": {"gate_margin": None, "scales": [160]},
                                            "local": {"mirror": False}}))
    assert cfg.threshold == 1 and cfg.descriptor.gate_margin is None and cfg.descriptor.scales == (160,)


def test_missing_config_file_and_unavailable_cuda(tmp_path, monkeypatch):
    args = argparse.Namespace(config=str(tmp_path / "nope.json"), device=None)
    with pytest.raises(ConfigError, match="nope.json: config file not found"):
        config_from_args(args)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
        config_from_args(_args(tmp_path, device="cuda"))


@pytest.mark.parametrize("command", ["match", "index", "score", "report", "demo"])
def test_every_model_subcommand_takes_device_and_config(command):
    text = build_parser(command)._subparsers._group_actions[0].choices[command].format_help()
    assert "--device {auto,cpu,cuda}" in text and "--config JSON" in text


def test_bad_config_is_exit_2_on_the_command_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"local": {"ratio": "high"}}')
    q = tmp_path / "q.png"
    q.write_bytes(b"")
    for argv in (["score", str(q), str(q), "--config", str(bad)],
                 ["match", "--queries", str(tmp_path), "--references", str(tmp_path), "--output",
                  str(tmp_path / "o.csv"), "--config", str(bad)],
                 ["match", "--exhaustive", "--queries", str(tmp_path), "--references", str(tmp_path), "--output",
                  str(tmp_path / "o.csv"), "--config", str(bad)],
                 ["index", str(tmp_path), "--index", str(tmp_path / "idx"), "--config", str(bad)],
                 ["report", str(tmp_path / "s.csv"), "--queries", str(tmp_path), "--references", str(tmp_path),
                  "--output", str(tmp_path / "r.html"), "--config", str(bad)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"error: {bad}: 'local.ratio' must be a number, got \"high\"" in err, (argv, err)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "idx").exists()


def test_verbosity_before_or_after_the_subcommand():
    p = build_parser("eval")
    a = p.parse_args(["-q", "eval", "s.csv", "g.csv"])
    assert (a.verbose, a.quiet) == (0, 1)
    a = p.parse_args(["eval", "s.csv", "g.csv", "-vv"])
    assert (a.verbose, a.quiet) == (2, 0)
    a = p.parse_args(["-v", "eval", "s.csv", "g.csv"])
    assert (a.verbose, a.quiet) == (1, 0)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_builds_with_the_verbosity_options(command):
    """The whole parser of each subcommand, as ``icd COMMAND`` builds it: no option of a subcommand may clash with
    icd's own -v/-q (``icd make-benchmark`` once crashed on every call with its own --quiet)."""
    p = build_parser(command)
    sub = p._subparsers._group_actions[0].choices[command]
    assert "--quiet" in sub.format_help() and "--verbose" in sub.format_help()


def test_make_benchmark_quiet_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    from matcher.benchmark.edits import synthetic_photo

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        Image.fromarray(synthetic_photo(np.random.default_rng(i), 200, 150)).save(photos / f"gen{i}.png")
    argv = ["make-benchmark", str(photos), str(tmp_path / "b"), "--references", "2", "--queries", "2",
            "--background", "0", "--holistic", "0", "--same-scene", "0", "--shared-overlay", "0", "--quiet"]
    assert main(argv) == 0
    assert "references: 2" in capsys.readouterr().out
    assert (tmp_path / "b" / "ground_truth.csv").is_file()


def test_logging_levels(capsys):
    log = logging.getLogger("matcher.cli.some_command")
    try:
        for verbosity, shown in ((0, {"info", "warning"}), (-1, {"warning"}), (1, {"debug", "info", "warning"})):
            configure_logging(verbosity)
            log.debug("debug")
            log.info("info")
            log.warning("warning")
            err = capsys.readouterr().err.splitlines()
            assert {line.removeprefix("warning: ") for line in err} == shown, verbosity
            assert "warning: warning" in err
        configure_logging(0)
        configure_logging(0)  # again: still one handler, one line per record
        log.info("once")
        assert capsys.readouterr().err == "once\n"
    finally:
        configure_logging(0)


def test_verbose_shows_the_configuration(tmp_path, capsys):
    q = tmp_path / "q.png"
    q.write_bytes(b"")
    assert main(["score", str(q), str(q), "--local-only", "-v", "--device", "cpu"]) == 2  # unreadable picture
    err = capsys.readouterr().err
    assert "configuration: {" in err and '"device": "cpu"' in err
    assert main(["score", str(q), str(q), "--local-only", "--device", "cpu"]) == 2
    assert "configuration:" not in capsys.readouterr().err
