import json

from flayer.report import main
from flayer.results.recorder import round_metrics, summarize
from flayer.results.report import find_runs
from flayer.strategy import ClientEval, RoundRecord


def write_run(folder, method, seed, best):
    folder.mkdir(parents=True)
    summary = {"method": method, "dataset": "fmnist", "alpha": 0.1, "seed": seed,
               "best_accuracy": best, "best_round": 3, "final_accuracy": best - 0.01,
               "total_upload_bytes": 2_500_000, "wall_seconds": 12.3}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_report_reads_runs_and_multiruns(tmp_path, capsys):
    write_run(tmp_path / "single", "flayer", 0, 0.97)
    for i, m in enumerate(["flayer", "fedavg", "flayer", "fedavg"]):
        write_run(tmp_path / "sweep" / f"{i}-{m}", m, 0, 0.9 + i / 100)
    assert len(find_runs([tmp_path / "sweep"])) == 4
    assert main([str(tmp_path / "single"), str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 + 5
    assert out[2].startswith("| flayer | fmnist | 0.1 | 0 | 97.00 (3) | 96.00 | 2.5 | 12 |")


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
    empty = round_metrics(RoundRecord(round=2, model_version=2, train_loss=0.2))
    assert empty["accuracy"] == "" and empty["train_loss"] == 0.2


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
