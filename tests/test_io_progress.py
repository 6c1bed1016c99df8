"""neuron3d.progress: plain progress lines (rate, time left) when not on a terminal."""

import io as textio

from neuron3d import progress as P


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_step_lines_every_n_steps_with_rate_and_time_left(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    out = textio.StringIO()
    with P.StepProgress(total=25, start=5, desc="train", every_steps=10, final_line=True,
                        unit="step", file=out) as bar:
        for step in range(6, 26):
            clock.now += 0.5  # 2 steps per second
            bar.update(step, f"loss={step / 100:.2f}")
    assert out.getvalue().splitlines() == [
        "train: 10/25 steps  loss=0.10  (2.00 steps/s, 8 s left)",
        "train: 20/25 steps  loss=0.20  (2.00 steps/s, 2 s left)",
        "train: 25/25 steps  loss=0.25  (2.00 steps/s, 0 s left)",
    ]


def test_iterable_progress_every_seconds(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    out = textio.StringIO()
    seen = []
    for item in P.progress(range(4), desc="slices", every=1.0, file=out):
        clock.now += 0.6
        seen.append(item)
    assert seen == [0, 1, 2, 3]
    # Lines at 1.2 s (2 done) and 2.4 s (4 done); no final line for plain loops.
    assert out.getvalue().splitlines() == [
        "slices: 2/4 items  (1.67 items/s, 1 s left)",
        "slices: 4/4 items  (1.67 items/s, 0 s left)",
    ]


def test_durations_and_unknown_total():
    assert [P.format_duration(s) for s in (4.4, 65, 3 * 3600 + 7 * 60 + 5)] == [
        "4 s", "1 min 05 s", "3 h 07 min"]
    assert P.format_duration(float("inf")) == "?"
    bar = P.StepProgress(file=textio.StringIO())
    assert bar.line(3).startswith("3/? items  (")
    assert "left" not in bar.line(3)
