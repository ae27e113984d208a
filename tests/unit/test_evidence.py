"""What a failed fault scenario prints of the coordinator's log: the transitions that
decide how a transaction ended are kept however far they lie from the end."""

from __future__ import annotations

from tests.support.evidence import notable_transitions


def committed(n: int, epoch: int = 1, pid: int = 7) -> list[str]:
    out = []
    for i in range(n):
        out += [
            f"Ongoing pid {pid} epoch {epoch} t={i} posts_with_counts[0]",
            f"PrepareCommit pid {pid} epoch {epoch} t={i} posts_with_counts[0]",
            f"CompleteCommit pid {pid} epoch {epoch} t={i} ",
        ]
    return out


def test_a_short_history_is_shown_whole() -> None:
    history = committed(3)
    assert notable_transitions(history, last=25) == history


def test_an_abort_far_from_the_end_is_kept_with_the_state_it_left() -> None:
    aborted = [
        "Ongoing pid 7 epoch 1 t=50 posts_with_counts[0, 4]",
        "PrepareAbort pid 7 epoch 2 t=51 posts_with_counts[0, 4]",
        "CompleteAbort pid 7 epoch 2 t=52 ",
    ]
    history = committed(40) + aborted + committed(40, epoch=2)
    shown = notable_transitions(history, last=5)
    assert shown[:4] == ["... 120 transitions left out", *aborted]
    assert shown[4] == "... 115 transitions left out"
    assert shown[5:] == history[-5:]


def test_a_new_producer_epoch_is_kept_and_gaps_are_counted() -> None:
    history = committed(10) + committed(10, epoch=3)
    shown = notable_transitions(history, last=2)
    first_new = history.index("Ongoing pid 7 epoch 3 t=0 posts_with_counts[0]")
    assert shown == [
        f"... {first_new - 1} transitions left out",
        history[first_new - 1],
        history[first_new],
        f"... {len(history) - first_new - 3} transitions left out",
        *history[-2:],
    ]


def test_an_unreadable_record_is_always_shown() -> None:
    history = [*committed(10), "payload: null", *committed(10)]
    assert "payload: null" in notable_transitions(history, last=1)
