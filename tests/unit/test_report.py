import csv
import json

import numpy as np
import pytest

from flayer.results.record import ClientEval, RoundRecord
from flayer.results.recorder import (
    CLIENT_COLUMNS,
    METRIC_COLUMNS,
    NEW_COLUMNS,
    RunRecorder,
    accuracy_text,
    round_metrics,
    summarize,
)
from flayer.results.report import main
from flayer.results.runs import find_runs
from flayer.results.tables import GROUP_COLUMNS


def write_run(folder, method, seed, best, alpha=0.1, extra="", upload=2_500_000, seconds=12.3,
              clients=20, rounds=20):
    """A finished run; best=None is a run that never evaluated a round (as summarize writes
    it), alpha=None a split without an alpha (the summary then has no "alpha")."""
    folder.mkdir(parents=True)
    summary = {"method": method, "dataset": "fmnist", "seed": seed, "num_clients": clients,
               "num_rounds": rounds, "best_accuracy": best,
               "best_round": None if best is None else 3,
               "final_accuracy": None if best is None else best - 0.01,
               "total_upload_bytes": upload, "wall_seconds": seconds}
    summary["partition"] = "iid" if alpha is None else "dirichlet"
    if alpha is not None:
        summary["alpha"] = alpha
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.yaml").write_text(
        f"strategy:\n  name: {method}\n{extra}partition:\n  alpha: {alpha}\n"
        f"seed: {seed}\nnum_clients: {clients}\nnum_rounds: {rounds}\nprogress: false\n")
    curve = "0,\n1,\n" if best is None else f"0,0.5\n1,\n2,{best}\n"
    (folder / "metrics.csv").write_text("round,accuracy\n" + curve)


def csv_groups(folder):
    with open(folder / "comparison.csv") as f:
        return {r["group"]: r for r in csv.DictReader(f)}


def md_groups(folder):
    """comparison.md's comparison table as {label: cells}."""
    lines = (folder / "comparison.md").read_text().split("\n\n", 1)[0].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {c[0]: dict(zip(GROUP_COLUMNS, c, strict=True)) for c in cells}


def table(text, title):
    block = text.split(f"## {title}\n\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()[2:]


def test_report_reads_runs_and_multiruns(tmp_path, capsys):
    write_run(tmp_path / "single", "flayer", 0, 0.97, alpha=0.3)
    for i, (m, a) in enumerate([("flayer", 0.1), ("fedavg", 0.1), ("flayer", 0.5),
                                ("fedavg", 0.5)]):
        write_run(tmp_path / "sweep" / f"{i}-{m}", m, 0, 0.9 + i / 100, alpha=a)
    assert len(find_runs([tmp_path / "sweep"])) == 4
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert len(table(out, "Runs")) == 4 and len(table(out, "Comparison")) == 4
    assert table(out, "Runs")[0] == (
        "| flayer | fmnist | 0.1 | 20 | 20 | 0 | 90.00 (3) | 89.00 | 2.5 | 12 |")
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (tmp_path / "sweep" / name).is_file()
    assert main([str(tmp_path / "single"), str(tmp_path / "sweep")]) == 0
    assert len(table(capsys.readouterr().out, "Runs")) == 5


def test_runs_differing_only_in_seed_are_grouped(tmp_path, capsys):
    for seed, best in ((0, 0.90), (1, 0.94)):
        write_run(tmp_path / f"{seed}-flayer", "flayer", seed, best)
        write_run(tmp_path / f"{seed + 2}-flayer", "flayer", seed, best - 0.1,
                  extra="  masked_upload: false\n")
    assert main([str(tmp_path)]) == 0
    rows = table(capsys.readouterr().out, "Comparison")
    assert len(rows) == 2
    assert any("masked_upload=False" in r and "| 0,1 | 82.00 ± 2.00 |" in r for r in rows)
    assert any("masked_upload=None" in r and "| 0,1 | 92.00 ± 2.00 |" in r for r in rows)


def test_runs_without_new_clients_group_with_runs_made_before_the_setting(tmp_path, capsys):
    write_run(tmp_path / "0-flayer", "flayer", 0, 0.90)  # a config without the keys
    write_run(tmp_path / "1-flayer", "flayer", 1, 0.94,
              extra="new_clients: 0\nnew_client_epochs: 5\n")  # epochs unused without them
    write_run(tmp_path / "2-flayer", "flayer", 0, 0.80,
              extra="new_clients: 2\nnew_client_epochs: 1\n")
    assert main([str(tmp_path)]) == 0
    rows = table(capsys.readouterr().out, "Comparison")
    assert len(rows) == 2
    assert any("new_clients=0" in r and "| 0,1 | 92.00 ± 2.00 |" in r for r in rows)
    assert any("new_clients=2" in r and "| 0 | 80.00 |" in r for r in rows)


def test_every_table_says_the_clients_and_rounds(tmp_path, capsys):
    """A small sweep (6 clients, 2 rounds) must not read like the default set-up beside it."""
    write_run(tmp_path / "0-flayer", "flayer", 0, 0.90, clients=6, rounds=2)
    write_run(tmp_path / "1-flayer", "flayer", 0, 0.95)
    assert main([str(tmp_path)]) == 0
    runs = table(capsys.readouterr().out, "Runs")
    assert runs[0].startswith("| flayer | fmnist | 0.1 | 6 | 2 | 0 |")
    assert runs[1].startswith("| flayer | fmnist | 0.1 | 20 | 20 | 0 |")
    md, rows = md_groups(tmp_path), csv_groups(tmp_path)
    small = "flayer (num_clients=6, num_rounds=2)"
    default = "flayer (num_clients=20, num_rounds=20)"
    assert (md[small]["clients"], md[small]["rounds"]) == ("6", "2")
    assert (md[default]["clients"], md[default]["rounds"]) == ("20", "20")
    assert (rows[small]["num_clients"], rows[small]["num_rounds"]) == ("6", "2")
    assert (rows[default]["num_clients"], rows[default]["num_rounds"]) == ("20", "20")


def test_a_stopped_run_shows_the_rounds_it_did(tmp_path, capsys):
    write_run(tmp_path / "0-flayer", "flayer", 0, 0.90)
    summary = json.loads((tmp_path / "0-flayer" / "summary.json").read_text())
    summary.update(rounds_completed=7, complete=False)
    (tmp_path / "0-flayer" / "summary.json").write_text(json.dumps(summary))
    assert main([str(tmp_path)]) == 0
    assert "| 20 | 7 of 20 | 0 |" in table(capsys.readouterr().out, "Runs")[0]


def test_csv_and_md_say_the_same_numbers(tmp_path):
    # flayer: three seeds; fedavg: two seeds, one of which never evaluated a round
    for seed, best, upload, seconds in ((0, 0.80, 1e6, 10.0), (1, 0.86, 2e6, 20.0),
                                        (2, 0.89, 3e6, 30.0)):
        write_run(tmp_path / f"{seed}-flayer", "flayer", seed, best, upload=upload,
                  seconds=seconds)
    write_run(tmp_path / "3-fedavg", "fedavg", 0, 0.70, upload=4e6, seconds=5.0)
    write_run(tmp_path / "4-fedavg", "fedavg", 1, None, upload=4e6, seconds=7.0)
    assert main([str(tmp_path)]) == 0
    rows, md = csv_groups(tmp_path), md_groups(tmp_path)
    assert set(rows) == set(md) == {"flayer", "fedavg"}

    flayer = rows["flayer"]
    best = np.array([0.80, 0.86, 0.89])
    assert flayer["runs_with_accuracy"] == "3" and flayer["seeds"] == "0 1 2"
    assert float(flayer["best_accuracy_mean"]) == pytest.approx(best.mean())
    assert float(flayer["best_accuracy_std"]) == pytest.approx(best.std())  # population std
    assert float(flayer["final_accuracy_mean"]) == pytest.approx(best.mean() - 0.01)
    assert float(flayer["final_accuracy_std"]) == pytest.approx(best.std())
    assert float(flayer["upload_mb_mean"]) == pytest.approx(2.0)
    assert float(flayer["upload_mb_std"]) == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert float(flayer["seconds_mean"]) == pytest.approx(20.0)
    assert md["flayer"]["best accuracy"] == f"{100 * best.mean():.2f} ± {100 * best.std():.2f}"

    # the run without an evaluated round gives no accuracy: not a 0% dragging the mean down
    fedavg = rows["fedavg"]
    assert fedavg["runs_with_accuracy"] == "1"
    assert float(fedavg["best_accuracy_mean"]) == pytest.approx(0.70)
    assert float(fedavg["best_accuracy_std"]) == 0.0
    assert float(fedavg["final_accuracy_mean"]) == pytest.approx(0.69)
    assert float(fedavg["seconds_mean"]) == pytest.approx(6.0)  # both runs took time
    assert md["fedavg"]["best accuracy"] == "70.00 (n=1 of 2)"
    assert md["fedavg"]["final accuracy"] == "69.00 (n=1 of 2)"
    for label, cells in md.items():  # every md mean is the csv's, rounded
        for column in ("best accuracy", "final accuracy"):
            key = column.replace(" ", "_") + "_mean"
            assert cells[column].split()[0] == f"{100 * float(rows[label][key]):.2f}"
    assert "not counted as 0%" in (tmp_path / "comparison.md").read_text()


def test_the_comparison_ranks_by_best_accuracy_within_each_alpha(tmp_path, capsys):
    runs = [("fedavg", 0.1, 0.70), ("flayer", 0.1, 0.98), ("local", 0.1, None),
            ("ditto", 0.1, 0.96), ("fedavg", 0.5, 0.80), ("flayer", 0.5, 0.90)]
    for i, (method, alpha, best) in enumerate(runs):
        write_run(tmp_path / f"{i}-{method}", method, 0, best, alpha=alpha)
    assert main([str(tmp_path)]) == 0
    rows = table(capsys.readouterr().out, "Comparison")
    order = [(r.split("|")[1].split()[0], r.split("|")[3].strip()) for r in rows]
    expected = [("flayer", "0.1"), ("ditto", "0.1"), ("fedavg", "0.1"), ("local", "0.1"),
                ("flayer", "0.5"), ("fedavg", "0.5")]
    assert order == expected
    with open(tmp_path / "comparison.csv") as f:  # the csv in the same order
        assert [(r["group"].split()[0], r["alpha"]) for r in csv.DictReader(f)] == expected


def test_nineteen_methods_get_distinct_curves_and_a_zoom_panel(tmp_path, monkeypatch):
    from flayer.results.plots import plt, zoom_range
    from flayer.results.statistics import Curve

    for i in range(19):
        write_run(tmp_path / f"{i}-m{i}", f"m{i}", 0, 0.6 + i / 50)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    assert main([str(tmp_path)]) == 0
    (fig,) = figures
    curves, zoom = fig.axes
    styles = [(line.get_color(), line.get_linestyle()) for line in curves.get_lines()]
    assert len(styles) == 19 == len(set(styles))
    labels = [t.get_text() for t in zoom.get_legend().get_texts()]
    assert labels[0] == "m18 (n=1)" and labels[-1] == "m0 (n=1)"  # the table's order
    low, high = zoom.get_ylim()
    finals = sorted(0.6 + i / 50 for i in range(19))
    assert (low, high) == pytest.approx(zoom_range(
        [Curve([0, 2], [0.5, f], [0.5, f], [0.5, f]) for f in finals]))
    assert low > 0.75  # the lower half of the methods is out of the zoom


def kept_figures(monkeypatch):
    """The figures the plots draw, kept open to look at."""
    from flayer.results.plots import plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    return figures


def test_accuracy_png_zooms_on_the_rounds_after_round_0(tmp_path, monkeypatch):
    from flayer.results.plots import plot_run

    figures = kept_figures(monkeypatch)
    accs = [0.1, 0.85, 0.88, 0.87, 0.9, 0.89]
    rows = [{"round": r, "accuracy": a, "accuracy_mean": a, "accuracy_std": 0.3,
             "train_loss": "" if r == 0 else 1.0 / r} for r, a in enumerate(accs)]
    plot_run(rows, tmp_path / "accuracy.png", "a title")
    (fig,) = figures
    every, later, loss = fig.axes
    low, high = later.get_ylim()
    assert 0.1 < low < 0.85 and 0.9 < high <= 1.0  # round 0 is out of the zoom
    assert later.get_xlim()[0] > 0
    for ax in fig.axes:
        assert max(ax.get_xticks()) == 5  # the last round, and no tick past it
    for ax in (every, later):
        band = ax.collections[0].get_paths()[0].vertices[:, 1]
        assert band.min() >= 0 and band.max() <= 1  # mean ± 0.3, clipped to [0, 1]
        (star,) = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert (list(star.get_xdata()), list(star.get_ydata())) == ([4], [0.9])
        assert "best: 90.00% (round 4)" in star.get_label()
    assert fig._suptitle.get_text() == "a title"


def test_accuracy_png_draws_the_new_clients_curve_where_they_were_evaluated(tmp_path,
                                                                           monkeypatch):
    from flayer.results.plots import plot_run

    figures = kept_figures(monkeypatch)
    rows = [{"round": r, "accuracy": 0.5 + 0.1 * r, "accuracy_mean": 0.5, "accuracy_std": 0.1,
             "train_loss": "", "new_accuracy": "" if r % 2 else 0.2 + 0.1 * r}
            for r in range(5)]
    plot_run(rows, tmp_path / "accuracy.png", "t")
    (fig,) = figures
    for ax in fig.axes[:2]:
        (new,) = [line for line in ax.get_lines() if line.get_label().startswith("new clients")]
        shown = [r for r in (0, 2, 4) if r > 0 or ax is fig.axes[0]]
        assert list(new.get_xdata()) == shown
        assert ax.get_ylim()[0] <= min(0.2 + 0.1 * r for r in shown)  # the curve is in view


def test_comparison_png_is_titled_with_the_setup(tmp_path, monkeypatch):
    figures = kept_figures(monkeypatch)
    write_run(tmp_path / "0-flayer", "flayer", 0, 0.9)
    write_run(tmp_path / "1-fedavg", "fedavg", 0, 0.8)
    assert main([str(tmp_path / "0-flayer"), str(tmp_path / "1-fedavg")]) == 0
    assert figures.pop()._suptitle.get_text() == (
        "fmnist · dirichlet(α=0.1) · 20 clients · 20 rounds")
    write_run(tmp_path / "2-flayer", "flayer", 0, 0.9, alpha=None, clients=6, rounds=2)
    assert main([str(tmp_path)]) == 0  # where runs differ, the title lists each value
    assert figures.pop()._suptitle.get_text() == (
        "fmnist · dirichlet(α=0.1), iid · 20, 6 clients · 20, 2 rounds")


def test_a_group_that_never_evaluated_has_empty_accuracy_cells(tmp_path, capsys):
    write_run(tmp_path / "0-fedavg", "fedavg", 0, None)
    assert main([str(tmp_path)]) == 0
    row = csv_groups(tmp_path)["fedavg"]
    assert row["runs_with_accuracy"] == "0"
    assert row["best_accuracy_mean"] == row["final_accuracy_std"] == ""
    assert md_groups(tmp_path)["fedavg"]["best accuracy"] == "-"
    assert (tmp_path / "comparison.png").is_file()


def test_a_split_without_alpha_shows_a_dash(tmp_path, capsys):
    write_run(tmp_path / "0-flayer", "flayer", 0, 0.9, alpha=None)
    write_run(tmp_path / "1-flayer", "flayer", 1, 0.9, alpha=None)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert table(out, "Runs")[0].startswith("| flayer | fmnist | - | 20 | 20 | 0 |")
    assert md_groups(tmp_path)["flayer"]["alpha"] == "-"
    assert csv_groups(tmp_path)["flayer"]["alpha"] == "-"


def test_report_on_a_folder_without_runs_fails_clearly(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_round_metrics_definitions():
    rec = RoundRecord(round=1, model_version=1, clients=[
        ClientEval(0, correct=9, num_test=10, auc=0.5, loss=1.0),
        ClientEval(1, correct=10, num_test=30, auc=1.0, loss=2.0),
    ], train_loss=0.3, trained=2, upload_bytes=100, failures=0, seconds=1.0)
    row = round_metrics(rec)
    assert row["accuracy"] == 19 / 40  # sum of correct / sum of test samples
    assert row["accuracy_mean"] == (0.9 + 1 / 3) / 2
    assert abs(row["accuracy_std"] - abs(0.9 - 1 / 3) / 2) < 1e-12
    assert row["auc"] == (0.5 * 10 + 1.0 * 30) / 40  # weighted by test samples
    empty = round_metrics(RoundRecord(round=2, model_version=2, train_loss=0.2,
                                      train_metrics={"personal-loss": 0.1}))
    assert empty["accuracy"] == "" and empty["train_loss"] == 0.2
    assert empty["personal_loss"] == 0.1


def test_metrics_csv_has_a_column_for_each_extra_train_metric(tmp_path):
    recorder = RunRecorder(tmp_path, {"method": "ditto"}, 1, progress=False,
                           train_metrics=("personal-loss",))
    recorder(RoundRecord(round=0, model_version=0))
    recorder(RoundRecord(round=1, model_version=1, train_loss=0.5,
                         train_metrics={"personal-loss": 0.25}))
    recorder.finish()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    assert [r["personal_loss"] for r in rows] == ["", "0.25"]


def test_summary_best_and_final():
    rows = [{"round": 0, "accuracy": 0.5, "accuracy_mean": 0.5, "accuracy_std": 0, "auc": 0.9,
             "upload_bytes": 0, "failures": 0},
            {"round": 1, "accuracy": 0.9, "accuracy_mean": 0.9, "accuracy_std": 0, "auc": 0.9,
             "upload_bytes": 10, "failures": 1},
            {"round": 2, "accuracy": 0.8, "accuracy_mean": 0.8, "accuracy_std": 0, "auc": 0.9,
             "upload_bytes": 10, "failures": 0}]
    s = summarize(rows, {"num_rounds": 2}, 3.0)
    assert (s["best_accuracy"], s["best_round"]) == (0.9, 1)
    assert (s["final_accuracy"], s["final_round"]) == (0.8, 2)
    assert s["total_upload_bytes"] == 20 and s["complete"]


def test_commands_print_accuracies_with_four_decimals():
    s = summarize([{"round": 0, "accuracy": 0.912345, "accuracy_mean": 0.9, "accuracy_std": 0,
                    "auc": 0.9, "upload_bytes": 0, "failures": 0}], {"num_rounds": 0}, 1.0)
    assert accuracy_text(s) == "best accuracy 0.9123 (round 0), final 0.9123 (round 0)"
    never = summarize([{"round": 0, "accuracy": "", "upload_bytes": 0, "failures": 0}], {}, 1.0)
    assert accuracy_text(never) == "best accuracy - (round -), final - (round -)"


def test_new_client_columns_appear_only_in_a_run_with_new_clients(tmp_path):
    def record(folder, info):
        recorder = RunRecorder(folder, {"num_rounds": 1, **info}, 1, progress=False)
        seen = [ClientEval(0, correct=5, num_test=10, auc=0.5, loss=1.0)]
        new = [ClientEval(2, correct=1, num_test=4, auc=0.5, loss=2.0),
               ClientEval(1, correct=3, num_test=4, auc=0.5, loss=2.0)]
        recorder(RoundRecord(round=0, model_version=0, clients=seen, new_clients=new))
        recorder(RoundRecord(round=1, model_version=1, train_loss=0.5))  # not evaluated
        return recorder.finish()

    plain = record(tmp_path / "plain", {})
    metrics = list(csv.DictReader((tmp_path / "plain" / "metrics.csv").open()))
    assert list(metrics[0]) == METRIC_COLUMNS
    with (tmp_path / "plain" / "clients.csv").open() as f:
        assert next(csv.reader(f)) == CLIENT_COLUMNS
    assert not [k for k in plain if "new" in k]

    summary = record(tmp_path / "new", {"new_clients": 2})
    metrics = list(csv.DictReader((tmp_path / "new" / "metrics.csv").open()))
    assert list(metrics[0]) == METRIC_COLUMNS + NEW_COLUMNS
    assert float(metrics[0]["accuracy"]) == 0.5  # the seen clients' only
    assert float(metrics[0]["new_accuracy"]) == 4 / 8
    assert float(metrics[0]["new_accuracy_mean"]) == 0.5
    assert float(metrics[0]["new_accuracy_std"]) == 0.25
    assert metrics[1]["new_accuracy"] == ""
    clients = list(csv.DictReader((tmp_path / "new" / "clients.csv").open()))
    assert [(r["client"], r["new_client"]) for r in clients] == [("0", "0"), ("2", "1"),
                                                                 ("1", "1")]
    assert (summary["best_new_accuracy"], summary["best_new_round"]) == (0.5, 0)
    assert summary["final_new_accuracy"] == 0.5 and summary["final_accuracy"] == 0.5
    assert "new clients: best 0.5000 (round 0), final 0.5000" in accuracy_text(summary)


def test_the_report_shows_new_client_accuracy_when_a_run_has_it(tmp_path, capsys):
    write_run(tmp_path / "runs" / "a", "fedavg", 0, 0.9)
    assert main([str(tmp_path / "runs")]) == 0
    assert "new clients" not in capsys.readouterr().out
    header = (tmp_path / "runs" / "comparison.csv").read_text().splitlines()[0]
    assert "new_" not in header
    write_run(tmp_path / "runs" / "b", "fedper", 0, 0.8)
    summary = json.loads((tmp_path / "runs" / "b" / "summary.json").read_text())
    summary.update(new_clients=2, best_new_accuracy=0.7, best_new_round=3,
                   final_new_accuracy=0.65)
    (tmp_path / "runs" / "b" / "summary.json").write_text(json.dumps(summary))
    assert main([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "| fedper | fmnist | 0.1 | 20 | 20 | 0 | 80.00 (3) | 79.00 | 2.5 | 12 | 70.00 (3) " \
           "| 65.00 |" in table(out, "Runs")
    assert table(out, "Runs")[0].endswith("| - | - |")  # fedavg: none
    assert "New clients:" in out
    groups = csv_groups(tmp_path / "runs")
    assert float(groups["fedper"]["new_final_accuracy_mean"]) == 0.65
    assert groups["fedavg"]["new_final_accuracy_mean"] == ""
