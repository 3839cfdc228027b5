"""The commands' progress bars in a log file (stderr not a terminal): plain lines, throttled."""

import io

from deblurfast import _progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_log_file_gets_plain_lines_at_most_every_interval_and_the_last_state(monkeypatch):
    clock, log = Clock(), io.StringIO()
    monkeypatch.setattr(_progress.time, "monotonic", clock)
    monkeypatch.setattr(_progress.sys, "stderr", log)
    bar = _progress.progress(total=100, desc="frames", unit="frames")
    for i in range(100):
        clock.now += 0.5  # 50 s in all: a line every 10 s, not one per redraw
        bar.set_postfix_str(f"frame {i}")
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("frames:   0%") and lines[-1].startswith("frames: 100%")
    assert "100/100" in lines[-1] and "frames/s" in lines[-1] and "frame 99" in lines[-1]
    assert 5 <= len(lines) <= 8, lines


def test_notes_do_not_leave_a_bar_half_drawn(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(_progress.sys, "stderr", log)
    bar = _progress.progress(total=2, desc="deblurring", unit="images")
    bar.update()
    _progress.note("skipped a.png: unreadable")
    bar.update()
    bar.close()
    assert "skipped a.png: unreadable\n" in log.getvalue()
    assert all(line.startswith(("deblurring:", "skipped")) for line in log.getvalue().splitlines())
