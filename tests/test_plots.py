"""Run curves from metrics.jsonl."""

import json

import pytest
from PIL import Image

from posrft.train.plots import plot_curves, read_metrics


def test_plot_curves_writes_one_panel_per_present_key(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "reward/text": s / 10}) + "\n" for s in range(1, 6)))
    out = plot_curves(log, ["reward/text", "not/logged"], tmp_path / "c.png")
    assert Image.open(out).size[0] > 100
    with pytest.raises(ValueError, match="none of"):
        plot_curves(log, ["not/logged"], tmp_path / "d.png")


def test_bad_metrics_line_names_file_and_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2"):
        read_metrics(log)
