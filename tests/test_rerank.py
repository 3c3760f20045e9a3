"""Re-ranking the search's best cells by a short stand-alone training (rnas.search.rerank, stages/rerank.py)."""
import pytest

from rnas.config import ConfigError, from_dict
from rnas.tasks.image import ImageParams
from rnas.search.pool import ArchPool
from rnas.search.rerank import MeasurementStore, candidates, mean_record, repeat_seed, rerank, training_key, winner
from rnas.spaces.nb201 import NB201Space
from rnas.tasks import get_task

SPACE = NB201Space()
CELLS = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
         "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|",
         "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"]


def scored_pool():
    # supernet order: CELLS[1] (0.9), CELLS[2] (0.8), CELLS[0] (0.7)
    return ArchPool(SPACE, [SPACE.from_str(c) for c in CELLS], [0.7, 0.9, 0.8]).top(3)


VALIDATION = {CELLS[0]: 0.6, CELLS[1]: 0.4, CELLS[2]: 0.5}


def recording_measure(measured):
    def measure(arch, repeat=0):
        measured.append(arch)
        return {"validation_score": VALIDATION[arch], "valid_accuracy": VALIDATION[arch]}
    return measure


def test_rerank_measures_each_candidate_once_in_supernet_order_and_resumes(tmp_path):
    store, measured = MeasurementStore(tmp_path / "measured", "f"), []
    store.save(CELLS[1], {"validation_score": 0.4, "valid_accuracy": 0.4, "seconds": 1.0})  # an interrupted run's
    rows = rerank(SPACE, scored_pool(), recording_measure(measured), store)
    assert measured == [CELLS[2], CELLS[0]]  # the one already measured is not trained again
    assert sorted(store.load()) == sorted(CELLS)  # each saved as it was measured
    assert [(r["search_rank"], r["arch"], r["supernet_score"], r["reused"]) for r in rows] == [
        (1, CELLS[1], 0.9, True), (2, CELLS[2], 0.8, False), (3, CELLS[0], 0.7, False)]
    assert winner(rows)["arch"] == CELLS[0]  # supernet rank 3, the best validation score


def test_ranks_split_the_candidates_and_rank_0_gathers_the_same_rows(tmp_path):
    alone, split = MeasurementStore(tmp_path / "alone", "f"), MeasurementStore(tmp_path / "split", "f")
    rows_alone = rerank(SPACE, scored_pool(), recording_measure([]), alone)
    by_rank = {rank: [] for rank in (0, 1)}
    assert rerank(SPACE, scored_pool(), recording_measure(by_rank[1]), split, shard=(1, 2)) is None
    rows_split = rerank(SPACE, scored_pool(), recording_measure(by_rank[0]), split, shard=(0, 2))
    assert by_rank == {0: [CELLS[1], CELLS[0]], 1: [CELLS[2]]}  # candidates 1 and 3 on rank 0, 2 on rank 1
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "reused")} for r in rows]  # noqa: E731
    assert drop(rows_split) == drop(rows_alone)
    assert winner(rows_split)["arch"] == winner(rows_alone)["arch"]


def test_a_run_interrupted_on_two_ranks_resumes_on_three(tmp_path):
    store, measured = MeasurementStore(tmp_path / "measured", "f"), []
    rerank(SPACE, scored_pool(), recording_measure(measured), store, shard=(1, 2))  # rank 0 was killed
    for rank in (1, 2, 0):
        rerank(SPACE, scored_pool(), recording_measure(measured), store, shard=(rank, 3))
    assert sorted(measured) == sorted(CELLS)  # every cell once: CELLS[2] by the first run, the rest after


def test_rank_0_waits_for_the_cells_of_the_other_ranks(tmp_path):
    import threading
    store = MeasurementStore(tmp_path / "measured", "f")
    late = threading.Timer(0.3, lambda: rerank(SPACE, scored_pool(), recording_measure([]), store, shard=(1, 2)))
    late.start()
    rows = rerank(SPACE, scored_pool(), recording_measure([]), store, shard=(0, 2), poll_seconds=0.05)
    late.join()
    assert [r["arch"] for r in rows] == [CELLS[1], CELLS[2], CELLS[0]]


#: per repeat: on its first training alone CELLS[2] wins (0.7); on the mean of two, CELLS[0] (0.6 vs 0.5)
NOISY = {CELLS[0]: [0.6, 0.6], CELLS[1]: [0.4, 0.4], CELLS[2]: [0.7, 0.3]}


def noisy_measure(measured):
    def measure(arch, repeat):
        measured.append((arch, repeat))
        return {"validation_score": NOISY[arch][repeat], "train_loss": 1.0 + repeat}
    return measure


def test_repeats_train_each_candidate_from_each_seed_and_rank_by_the_mean(tmp_path):
    store, measured = MeasurementStore(tmp_path / "measured", "f"), []
    one = rerank(SPACE, scored_pool(), noisy_measure(measured), store)
    assert measured == [(CELLS[1], 0), (CELLS[2], 0), (CELLS[0], 0)] and winner(one)["arch"] == CELLS[2]
    measured.clear()
    two = rerank(SPACE, scored_pool(), noisy_measure(measured), store, repeats=2)
    assert measured == [(CELLS[1], 1), (CELLS[2], 1), (CELLS[0], 1)]  # the first trainings are reused
    assert [(r["arch"], r["validation_score"], r["validation_score_0"], r["validation_score_1"], r["train_loss"])
            for r in two] == [(CELLS[1], 0.4, 0.4, 0.4, 1.5), (CELLS[2], 0.5, 0.7, 0.3, 1.5),
                              (CELLS[0], 0.6, 0.6, 0.6, 1.5)]
    assert [r["reused"] for r in two] == [False] * 3  # each needed a new training
    assert winner(two)["arch"] == CELLS[0]
    assert sorted(store.load()) == sorted(training_key(c, r) for c in CELLS for r in (0, 1))


def test_ranks_split_the_repeats_and_gather_the_same_rows(tmp_path):
    alone, split = MeasurementStore(tmp_path / "alone", "f"), MeasurementStore(tmp_path / "split", "f")
    rows_alone = rerank(SPACE, scored_pool(), noisy_measure([]), alone, repeats=2)
    by_rank = {0: [], 1: []}
    assert rerank(SPACE, scored_pool(), noisy_measure(by_rank[1]), split, shard=(1, 2), repeats=2) is None
    rows_split = rerank(SPACE, scored_pool(), noisy_measure(by_rank[0]), split, shard=(0, 2), repeats=2)
    assert by_rank == {0: [(c, 0) for c in (CELLS[1], CELLS[2], CELLS[0])],
                       1: [(c, 1) for c in (CELLS[1], CELLS[2], CELLS[0])]}
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(rows_split) == drop(rows_alone)


def test_the_mean_record_averages_values_and_sums_seconds():
    records = [{"validation_score": 0.5, "valid_loss": 2.0, "seconds": 3.0},
               {"validation_score": 0.7, "valid_loss": 1.0, "seconds": 4.0}]
    assert mean_record(records) == {"validation_score": 0.6, "valid_loss": 1.5, "validation_score_0": 0.5,
                                    "validation_score_1": 0.7, "seconds": 7.0}
    assert mean_record(records[:1]) == records[0]  # one training: its record as it is


def test_the_first_training_keeps_the_run_seed_and_key_and_the_others_get_their_own():
    assert (repeat_seed(7, 0), repeat_seed(7, 1), repeat_seed(7, 2)) == (7, 1007, 2007)
    assert training_key(CELLS[0], 0) == CELLS[0]
    assert len({training_key(CELLS[0], r) for r in range(3)}) == 3


def test_rerank_runs_on_its_own_processes_or_else_on_trainer_nproc():
    from stages.rerank import processes

    assert processes(from_dict(ImageParams, {"trainer": {"nproc": 2}})) == ("trainer.nproc", 2)
    assert processes(from_dict(ImageParams, {"trainer": {"nproc": 2}, "rerank": {"processes": 3}})) == ("rerank.processes", 3)
    assert processes(from_dict(ImageParams, {"rerank": {"processes": 2}})) == ("rerank.processes", 2)


def test_winner_ties_go_to_the_supernets_higher_rank():
    rows = [{"search_rank": 1, "validation_score": 0.5}, {"search_rank": 2, "validation_score": 0.7},
            {"search_rank": 3, "validation_score": 0.7}]
    assert winner(rows)["search_rank"] == 2


def test_validation_scores_are_higher_is_better_for_both_tasks():
    assert get_task("image").validation_score({"valid_accuracy": 0.8, "valid_loss": 0.5}) == 0.8
    assert get_task("language").validation_score({"valid_loss": 4.5, "valid_ppl": 90.0}) == -4.5


@pytest.mark.parametrize("data, message", [
    ({"rerank": {"top": -1}}, r"^rerank\.top: must be >= 0"),
    ({"rerank": {"epochs": 0}}, r"^rerank\.epochs: must be positive"),
    ({"rerank": {"repeats": 0}}, r"^rerank\.repeats: must be >= 1"),
    ({"rerank": {"processes": 0}}, r"^rerank\.processes: must be >= 1"),
    ({"rerank": {"top": 1001}}, r"^rerank\.top: must be at most warmup\.pool_size"),
    ({"rerank": {"top": 2}, "data": {"search": {"valid_fraction": 0.0}}}, r"^rerank\.top: re-ranking needs a validation"),
])
def test_bad_rerank_params_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ImageParams, data)


def test_earlier_measurements_are_reused_only_by_the_same_configuration(tmp_path):
    folder = tmp_path / "state/measured"
    assert MeasurementStore(folder, "a").load() == {}  # nothing measured yet
    MeasurementStore(folder, "a").save(CELLS[0], {"validation_score": 0.5})
    assert MeasurementStore(folder, "a").load() == {CELLS[0]: {"validation_score": 0.5}}
    assert MeasurementStore(folder, "b").load() == {}  # other params, seed, data or code: measured anew


def test_the_measurement_fingerprint_follows_the_training_not_the_candidates(tmp_path):
    from rnas.artifacts import write_json
    from stages.rerank import measurement_fingerprint

    write_json(tmp_path / "meta.json", {"fingerprint": "data-1"})
    base = {"rerank": {"top": 3, "epochs": 2}, "seed": 0}
    fingerprint = lambda **changes: measurement_fingerprint(from_dict(ImageParams, {**base, **changes}),  # noqa: E731
                                                            tmp_path)
    reference = fingerprint()
    assert fingerprint() == reference
    # more candidates, another search: the cells measured so far are still valid
    assert fingerprint(rerank={"top": 5, "epochs": 2}) == reference
    assert fingerprint(search={"strategy": "random", "seed": 7}) == reference
    # another training, seed or dataset: measured anew
    assert fingerprint(rerank={"top": 3, "epochs": 3}) != reference
    assert fingerprint(retrain={"train": {"lr_max": 0.01}}) != reference
    assert fingerprint(retrain={"child": {"channels": 4}}) != reference
    assert fingerprint(seed=1) != reference
    write_json(tmp_path / "meta.json", {"fingerprint": "data-2"})
    assert fingerprint() != reference


def test_candidates_keep_the_minimum_distance_from_every_better_cell():
    # slots differing from the best cell A: B 1, C 2, D 6; B and C differ in 1, C and D in 6
    a = (1, 1, 1, 1, 1, 1)
    b, c, d = (2, 1, 1, 1, 1, 1), (2, 2, 1, 1, 1, 1), (3, 3, 3, 3, 3, 3)
    pool = ArchPool(SPACE, [d, c, b, a], [0.1, 0.7, 0.8, 0.9])
    assert candidates(pool, 3).archs == [a, b, c]  # the plain top
    assert candidates(pool, 3, min_distance=2).archs == [a, c, d]  # b is 1 slot from a
    assert candidates(pool, 3, min_distance=3).archs == [a, d]  # c is 2 slots from a: fewer than asked
