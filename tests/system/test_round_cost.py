"""Per-round cost that follows the working clients, where the user asks for it: a seeded
`eval_fraction` of the clients evaluated between the first and the last round, and lazy sync
for the methods that otherwise sync every client each round (FLAYER, FedALA)."""

from __future__ import annotations

import pytest
from flwr.app import MessageType

from flayer.config.validation import validate
from flayer.protocol import keys
from flayer.util.errors import ConfigError
from tests.localgrid import RecordingGrid, run_local


def evaluated(records) -> list[list[int]]:
    return [[c.partition_id for c in r.clients] for r in records]


def test_eval_fraction_evaluates_a_seeded_share_between_the_first_and_last_round(small):
    cfg = small("strategy=fedavg", "num_clients=4", "num_rounds=3", "eval_fraction=0.5")
    _, records, _ = run_local(cfg)
    rounds = evaluated(records)
    assert rounds[0] == rounds[3] == [0, 1, 2, 3]  # before training and at the end: all
    assert [len(r) for r in rounds[1:3]] == [2, 2]
    assert all(r.failures == 0 for r in records)  # the others were not asked: not missing
    _, again, _ = run_local(cfg)
    assert evaluated(again) == rounds  # seeded by run seed and round
    others = [evaluated(run_local(small("strategy=fedavg", "num_clients=4", "num_rounds=3",
                                        "eval_fraction=0.5", f"seed={s}"))[1])[1:3]
              for s in (1, 2, 3)]
    assert any(o != rounds[1:3] for o in others)  # another seed, another sample


def test_eval_fraction_one_is_every_client_every_round(small):
    _, records, _ = run_local(small("strategy=fedavg", "num_clients=4", "num_rounds=2"))
    assert evaluated(records) == [[0, 1, 2, 3]] * 3


@pytest.mark.parametrize("method", ["flayer", "fedala"])
def test_lazy_sync_with_every_client_working_gives_the_eager_numbers(small, method):
    fast = ["strategy.num_pre_loss=2", "strategy.max_start_passes=2"] if method == "fedala" else []
    eager = run_local(small(f"strategy={method}", *fast))[1]
    lazy = run_local(small(f"strategy={method}", "strategy.sync=lazy", *fast))[1]
    for e, la in zip(eager, lazy, strict=True):
        assert [c.correct for c in e.clients] == [c.correct for c in la.clients]
        assert e.train_loss == la.train_loss and e.upload_bytes == la.upload_bytes


@pytest.mark.parametrize("sync", ["eager", "lazy"])
def test_lazy_sync_sends_only_to_working_clients_and_they_start_from_the_newest(small, sync):
    cfg = small("strategy=flayer", f"strategy.sync={sync}", "num_clients=4", "num_rounds=3",
                "join_ratio=0.5", "eval_fraction=0.5")
    grid = RecordingGrid(cfg)
    _, records, _ = run_local(cfg, grid=grid)
    asked = {r: [] for r in range(4)}
    for msg, _, _ in grid.log:
        if msg.metadata.message_type == MessageType.EVALUATE:
            asked[int(msg.content[keys.CONFIG][keys.SERVER_ROUND])].append(msg)
    for rec in records[1:3]:
        evaluated = {c.partition_id for c in rec.clients}
        assert len(evaluated) == 2
        expected = 4 if sync == "eager" else 2  # eager also syncs the clients it skips
        assert len(asked[rec.round]) == expected
        for c in rec.clients:  # whoever is evaluated was set up from the newest model
            assert c.extra["init-version"] == rec.model_version
    assert all(r.failures == 0 for r in records)


@pytest.mark.parametrize("override, setting", [
    ("eval_fraction=0", "eval_fraction"), ("eval_fraction=1.5", "eval_fraction"),
    ("strategy.sync=sometimes", "strategy.sync"),
])
def test_bad_values_are_refused(small, override, setting):
    with pytest.raises(ConfigError, match=setting):
        validate(small(override))


def test_fedala_sync_is_checked_too(small):
    with pytest.raises(ConfigError, match="strategy.sync"):
        validate(small("strategy=fedala", "strategy.sync=never"))
