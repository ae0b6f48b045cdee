"""Progress output in a log file or pipe: whole lines, never carriage returns; transient bars stay silent."""
import io

from iiae.progress import LineProgress, progress_bar


def test_line_progress_writes_whole_lines():
    out = io.StringIO()
    bar = LineProgress(total=3, desc="run", file=out, mininterval=0, miniters=1)
    for _ in range(3):
        bar.update(1)
    bar.write("step 3: recall=1.0", file=out)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("run:   0%") and "step 3: recall=1.0" in lines and "3/3" in lines[-1]


def test_off_a_terminal_transient_bars_are_silent(capsys):
    # pytest captures stderr, so this is the non-terminal case
    with progress_bar(total=5, desc="embedding", leave=False) as bar:
        bar.update(5)
    with progress_bar(total=2, desc="train") as bar:
        bar.update(2)
    err = capsys.readouterr().err
    assert "embedding" not in err and "\r" not in err and "2/2" in err.splitlines()[-1]


def test_postfix_updates_wait_for_the_interval(capsys):
    # the trainer sets the loss every log_every steps: off a terminal that must not print a line each time
    with progress_bar(total=100, desc="train") as bar:
        for step in range(100):
            bar.update(1)
            bar.set_postfix(loss=f"{step:.4g}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "100/100" in lines[-1] and "loss=99" in lines[-1]  # the start, then the end
