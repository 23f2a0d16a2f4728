"""gannet plot draws the trace it is given: axis ranges from the trace,
retransmissions in red only where the trace has them."""

import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from gannet.config import Config
from gannet.observe import plot, qlog
from gannet.sim.config import LinkConfig
from gannet.sim.scenario import run_transfer

SIZE = 1_000_000


def _trace(tmp_path, name, loss):
    d = tmp_path / name
    link = (LinkConfig(delay=0.02, bandwidth=20e6, loss=loss, queue_bytes=100_000) if loss
            else LinkConfig(delay=0.02))  # no loss and no queue to overflow
    r = run_transfer(5, SIZE, link, LinkConfig(delay=0.02), config=Config(qlog_dir=str(d)))
    assert r.ok
    return next(str(d / f) for f in os.listdir(d) if f.endswith("-client.sqlog")), r


def _red_pixels(png):
    img = imread(png)[..., :3]
    return int(np.sum((img[..., 0] > 0.9) & (img[..., 1] < 0.1) & (img[..., 2] < 0.1)))


@pytest.mark.sim
def test_plot_is_drawn_from_the_trace(tmp_path):
    lossy, r_lossy = _trace(tmp_path, "lossy", 0.03)
    clean, r_clean = _trace(tmp_path, "clean", 0.0)
    assert r_lossy.client_stats["retransmits"] > 0 and r_clean.client_stats["retransmits"] == 0
    shapes = {}
    for name, path in (("lossy", lossy), ("clean", clean)):
        png = str(tmp_path / f"{name}.png")
        info = plot.render(path, png)
        _, events = qlog.read(path)
        packets = [e for e in events if e["name"] in ("transport:packet_sent", "transport:packet_received")]
        last = max(e["time"] for e in packets) / 1000.0
        assert info["t_end"] == pytest.approx(last)
        assert info["xlim"][0] == 0 and last <= info["xlim"][1] <= last * 1.02 + 1e-9
        assert info["top"] == SIZE and info["ylim"][1] == pytest.approx(SIZE / 1e6 * 1.02)
        data = sum(1 for e in events if e["name"] == "transport:packet_sent"
                   for f in e["data"]["frames"] if f["frame_type"] == "stream" and f["length"])
        assert info["points"] == data
        shapes[name] = (png, info)
    (lossy_png, lossy_info), (clean_png, clean_info) = shapes["lossy"], shapes["clean"]
    assert lossy_info["resent"] > 0 and clean_info["resent"] == 0
    # red (retransmissions, losses) only in the picture of the lossy trace
    assert _red_pixels(lossy_png) > 50 and _red_pixels(clean_png) == 0
    a, b = imread(lossy_png), imread(clean_png)
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_goodput_bins_count_newly_acknowledged_bytes():
    acks = [(0.1, 1000), (0.4, 3000), (0.9, 3000), (1.0, 5000)]
    g = plot.goodput(acks, 1.0, bins=2)
    assert g == [(0.25, 3000 * 8 / 0.5), (0.75, 2000 * 8 / 0.5)]


@pytest.mark.sim
def test_plot_command_writes_a_png(tmp_path):
    path, _ = _trace(tmp_path, "cmd", 0.01)
    out = tmp_path / "x.png"
    done = subprocess.run([sys.executable, "-m", "gannet", "plot", path, "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data segments" in done.stdout
