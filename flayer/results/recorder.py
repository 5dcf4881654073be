"""Writes a run directory as the rounds happen: metrics.csv, clients.csv, then summary.json
and accuracy.png. Rows are flushed each round so an interrupted run keeps what it did."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from flayer.results.record import ClientEval, RoundRecord
from flayer.results.setup import run_title
from flayer.run.stops import held_signals
from flayer.util.atomic import write_atomic

METRIC_COLUMNS = [
    "round", "model_version", "accuracy", "accuracy_mean", "accuracy_std", "auc", "loss",
    "train_loss", "clients_trained", "upload_bytes", "failures", "round_seconds",
]  # then the method's extra train metrics (ClientMethod.train_metrics), "-" written as "_"
# then, in a run with new clients (`new_clients` > 0) only, their accuracy over them: every
# other run's metrics.csv keeps exactly the columns above
NEW_COLUMNS = ["new_accuracy", "new_accuracy_mean", "new_accuracy_std"]

CLIENT_COLUMNS = ["round", "client", "accuracy", "test_samples", "correct", "auc", "loss"]
# clients.csv continues with the extra evaluation metrics the clients report (e.g. FLAYER's
# mixed-a, and init-version and state-hash from every method), named as they arrive first;
# in a run with new clients `new_client` (1 on a new client's row, else 0) follows the columns
NEW_CLIENT = "new_client"
RESULT_FILES = ("metrics.csv", "clients.csv", "summary.json")


def round_metrics(rec: RoundRecord, new_clients: bool = False) -> dict[str, Any]:
    """One metrics.csv row; evaluation columns are empty when the round evaluated nobody.
    The accuracy columns are the seen clients'; with `new_clients` the new clients' follow."""
    row: dict[str, Any] = {
        "round": rec.round,
        "model_version": rec.model_version,
        "train_loss": "" if rec.train_loss is None else rec.train_loss,
        **{column_name(k): v for k, v in rec.train_metrics.items()},
        "clients_trained": rec.trained,
        "upload_bytes": rec.upload_bytes,
        "failures": rec.failures,
        "round_seconds": round(rec.seconds, 4),
    }
    if rec.clients:
        accs = np.array([c.accuracy for c in rec.clients])
        n = np.array([c.num_test for c in rec.clients], dtype=np.float64)
        aucs = np.array([c.auc for c in rec.clients])
        ok = np.isfinite(aucs)
        row.update(
            accuracy=sum(c.correct for c in rec.clients) / n.sum(),
            accuracy_mean=float(accs.mean()),
            accuracy_std=float(accs.std()),
            auc=float((aucs[ok] * n[ok]).sum() / n[ok].sum()) if ok.any() else "",
            loss=float(sum(c.loss * c.num_test for c in rec.clients) / n.sum()),
        )
    else:
        row.update(accuracy="", accuracy_mean="", accuracy_std="", auc="", loss="")
    if new_clients:
        row.update(dict(zip(NEW_COLUMNS, accuracies(rec.new_clients), strict=True)))
    return row


def accuracies(clients: list[ClientEval]) -> tuple[float | str, ...]:
    """Over these clients: the sample-weighted accuracy, the mean over clients and its std
    (empty where none was evaluated)."""
    if not clients:
        return "", "", ""
    accs = np.array([c.accuracy for c in clients])
    return (sum(c.correct for c in clients) / sum(c.num_test for c in clients),
            float(accs.mean()), float(accs.std()))


def column_name(metric: str) -> str:
    return metric.replace("-", "_")


class RunRecorder:
    """Receives one RoundRecord per round and keeps the run directory up to date."""

    def __init__(self, run_dir: Path, info: dict[str, Any], num_rounds: int,
                 progress: bool = True, train_metrics: tuple[str, ...] = (),
                 keep_rounds: int | None = None) -> None:
        """A new run's files; with `keep_rounds` a continued run's, its rows up to that
        round kept (and every later row, from a round that did not finish, dropped)."""
        self.run_dir = run_dir
        self.info = info
        self.num_rounds = num_rounds
        self.rows: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.new_clients = int(info.get("new_clients", 0)) > 0  # run_info says so
        self._lock = threading.Lock()
        self._closed = False
        run_dir.mkdir(parents=True, exist_ok=True)
        columns = (METRIC_COLUMNS + [column_name(m) for m in train_metrics]
                   + (NEW_COLUMNS if self.new_clients else []))
        client_columns: list[str] | None = None
        with held_signals():  # the kept rows are written back whole
            if keep_rounds is not None:
                self.rows = [_parsed(r)
                             for r in _kept_rows(run_dir / "metrics.csv", keep_rounds)]
                client_columns = _keep_clients(run_dir / "clients.csv", keep_rounds)
            self._metrics = open(run_dir / "metrics.csv", "w", newline="")  # noqa: SIM115
            self._clients = open(run_dir / "clients.csv",  # noqa: SIM115
                                 "a" if client_columns else "w", newline="")
            self._mw = csv.DictWriter(self._metrics, fieldnames=columns, restval="")
            self._mw.writeheader()
            self._mw.writerows(self.rows)
            self._metrics.flush()
        # clients.csv's columns are known at the first evaluation (or from the kept file)
        self._cw: csv.DictWriter | None = None
        if client_columns:
            self._cw = csv.DictWriter(self._clients, fieldnames=client_columns, restval="",
                                      extrasaction="ignore")
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=num_rounds, desc=str(info.get("method", "run")),
                             unit="round", dynamic_ncols=True,
                             initial=max(0, keep_rounds or 0))

    def __call__(self, rec: RoundRecord) -> None:
        with held_signals(), self._lock:  # a row is written whole
            if not self._closed:  # a round that finishes while the run is being stopped
                self._record(rec)

    def _record(self, rec: RoundRecord) -> None:
        row = round_metrics(rec, self.new_clients)
        self.rows.append(row)
        self._mw.writerow(row)
        marked = [(c, 0) for c in rec.clients] + [(c, 1) for c in rec.new_clients]
        for c, new in marked:
            self._client_writer(sorted(c.extra)).writerow({
                **c.extra,
                "round": rec.round, "client": c.partition_id, "accuracy": c.accuracy,
                "test_samples": c.num_test, "correct": c.correct, "auc": c.auc,
                "loss": c.loss, **({NEW_CLIENT: new} if self.new_clients else {}),
            })
        self._metrics.flush()
        self._clients.flush()
        if self._bar is not None:
            if row["accuracy"] != "":
                self._bar.set_postfix(acc=f"{row['accuracy']:.4f}")
            if rec.round > 0:
                self._bar.update(1)
            else:
                self._bar.refresh()

    def _client_writer(self, extra: list[str]) -> csv.DictWriter:
        if self._cw is None:
            base = CLIENT_COLUMNS + ([NEW_CLIENT] if self.new_clients else [])
            columns = base + [k for k in extra if k not in base]
            self._cw = csv.DictWriter(self._clients, fieldnames=columns, restval="",
                                      extrasaction="ignore")
            self._cw.writeheader()
        return self._cw

    def finish(self) -> dict[str, Any]:
        """Close the files, write summary.json and accuracy.png (each whole or not at all;
        a stop asked meanwhile waits until both are written); returns the summary."""
        with held_signals():
            with self._lock:
                self._closed = True
            self._client_writer([])
            if self._bar is not None:
                self._bar.close()
            self._metrics.close()
            self._clients.close()
            summary = summarize(self.rows, self.info, time.perf_counter() - self.started)
            text = json.dumps(summary, indent=2) + "\n"
            write_atomic(self.run_dir / "summary.json", lambda f: f.write(text.encode()))
            from flayer.results.plots import plot_run

            plot_run(self.rows, self.run_dir / "accuracy.png", run_title(self.info))
        return summary


def _kept_rows(file: Path, last_round: int) -> list[dict[str, str]]:
    if not file.is_file():
        return []
    with open(file, newline="") as f:
        return [r for r in csv.DictReader(f) if _round_of(r.get("round")) <= last_round]


def _round_of(value: str | None) -> float:
    try:
        return int(value or "")
    except ValueError:  # a line cut short by a crash
        return float("inf")


def _parsed(row: dict[str, str]) -> dict[str, Any]:
    """A metrics.csv row as the recorder made it: numbers as numbers, "" as ""."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v is None or v == "":
            out[k] = ""
            continue
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = float(v)
    return out


def _keep_clients(file: Path, last_round: int) -> list[str] | None:
    """Rewrite clients.csv with its rows up to last_round; returns its columns (None when it
    has no header yet)."""
    if not file.is_file():
        return None
    with open(file, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if _round_of(r.get("round")) <= last_round]
    if not columns:
        return None
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    file.write_text(out.getvalue())
    return columns


def accuracy_text(summary: dict[str, Any]) -> str:
    """A summary's accuracies as every command prints them: 4 decimals, "-" for a run with
    no evaluated round."""
    def acc(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.4f}"

    def round_of(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else str(value)

    text = (f"best accuracy {acc('best_accuracy')} (round {round_of('best_round')}), "
            f"final {acc('final_accuracy')} (round {round_of('final_round')})")
    if "final_new_accuracy" in summary:
        text += (f"; new clients: best {acc('best_new_accuracy')} (round "
                 f"{round_of('best_new_round')}), final {acc('final_new_accuracy')}")
    return text


def summarize(rows: list[dict[str, Any]], info: dict[str, Any], wall: float) -> dict[str, Any]:
    evaluated = [r for r in rows if r["accuracy"] != ""]
    best = max(evaluated, key=lambda r: r["accuracy"], default=None)
    final = evaluated[-1] if evaluated else None
    last_round = rows[-1]["round"] if rows else 0
    return {
        **info,
        "rounds_completed": last_round,
        "best_accuracy": best["accuracy"] if best else None,
        "best_round": best["round"] if best else None,
        "final_accuracy": final["accuracy"] if final else None,
        "final_round": final["round"] if final else None,
        "final_accuracy_mean": final["accuracy_mean"] if final else None,
        "final_accuracy_std": final["accuracy_std"] if final else None,
        "final_auc": final["auc"] if final else None,
        "total_upload_bytes": int(sum(r["upload_bytes"] for r in rows)),
        "total_failures": int(sum(r["failures"] for r in rows)),
        "wall_seconds": round(wall, 2),
        "complete": last_round == info.get("num_rounds", last_round),
        **(_new_summary(rows) if int(info.get("new_clients", 0)) > 0 else {}),
    }


def _new_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The new clients' accuracy: at the last round that evaluated them, and at their best."""
    evaluated = [r for r in rows if r.get("new_accuracy", "") != ""]
    best = max(evaluated, key=lambda r: r["new_accuracy"], default=None)
    final = evaluated[-1] if evaluated else None
    return {
        "best_new_accuracy": best["new_accuracy"] if best else None,
        "best_new_round": best["round"] if best else None,
        "final_new_accuracy": final["new_accuracy"] if final else None,
        "final_new_accuracy_mean": final["new_accuracy_mean"] if final else None,
        "final_new_accuracy_std": final["new_accuracy_std"] if final else None,
    }
