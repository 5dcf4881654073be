import csv
import json

from flayer.report import main
from flayer.results.recorder import RunRecorder, round_metrics, summarize
from flayer.results.report import find_runs
from flayer.strategy import ClientEval, RoundRecord


def write_run(folder, method, seed, best, alpha=0.1, extra=""):
    folder.mkdir(parents=True)
    summary = {"method": method, "dataset": "fmnist", "alpha": alpha, "seed": seed,
               "best_accuracy": best, "best_round": 3, "final_accuracy": best - 0.01,
               "total_upload_bytes": 2_500_000, "wall_seconds": 12.3}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.yaml").write_text(
        f"strategy:\n  name: {method}\n{extra}partition:\n  alpha: {alpha}\n"
        f"seed: {seed}\nprogress: false\n")
    (folder / "metrics.csv").write_text(
        f"round,accuracy\n0,0.5\n1,\n2,{best}\n")


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
    assert table(out, "Runs")[0] == "| flayer | fmnist | 0.1 | 0 | 90.00 (3) | 89.00 | 2.5 | 12 |"
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
