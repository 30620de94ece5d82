"""The driver merges what one Ready sends to each peer without changing its meaning."""

from ledgermq.dledger.core.types import Entry, Message, MsgType
from ledgermq.dledger.member import coalesce


def append(dst, prev, prev_term, idxs, term=2, commit=0):
    es = tuple(Entry(i, term, b"x") for i in idxs)
    return Message(
        MsgType.APPEND, "n0", dst, term, index=prev, log_term=prev_term, entries=es, commit=commit
    )


def hb(dst, commit, ctx=0):
    return Message(MsgType.HEARTBEAT, "n0", dst, 2, commit=commit, context=ctx)


def test_consecutive_appends_merge_per_peer():
    msgs = [
        append("n1", 4, 1, [5], commit=3),
        append("n2", 4, 1, [5], commit=3),
        append("n1", 5, 2, [6], commit=4),
        hb("n2", 3, 1),
        append("n2", 5, 2, [6, 7], commit=4),
        hb("n2", 4, 2),
    ]
    out = coalesce(msgs, 1 << 20)
    assert [(m.dst, m.type) for m in out] == [
        ("n1", MsgType.APPEND),
        ("n2", MsgType.APPEND),
        ("n2", MsgType.HEARTBEAT),
    ]
    assert [e.index for e in out[0].entries] == [5, 6] and out[0].commit == 4
    assert [e.index for e in out[1].entries] == [5, 6, 7] and out[1].index == 4
    assert out[2].context == 2 and out[2].commit == 4


def test_non_continuing_appends_stay_apart():
    msgs = [append("n1", 4, 1, [5]), append("n1", 9, 2, [10]), append("n1", 5, 1, [6], term=1)]
    assert coalesce(msgs, 1 << 20) == msgs
    big = [append("n1", 4, 1, [5]), append("n1", 5, 2, [6])]
    assert len(coalesce(big, 1)) == 2


async def test_commit_only_appends_wait_for_the_next_append_and_merge_into_it(tmp_path):
    import asyncio

    from ledgermq.dledger.member import Member, MemberConfig

    sent: list[Message] = []
    peers = {"n0": "h:0", "n1": "h:1", "n2": "h:2"}
    m = Member(
        "g",
        "n0",
        peers,
        str(tmp_path),
        send=lambda addr, msg: sent.append(msg),
        config=MemberConfig(commit_hold_ms=50),
    )
    m._running = True
    m._send_all([append("n1", 5, 2, [], commit=5), hb("n2", 5)])
    assert [(x.dst, x.type) for x in sent] == [("n2", MsgType.HEARTBEAT)]  # n1's waits
    m._send_all([append("n1", 5, 2, [6], commit=5)])
    assert len(sent) == 2 and sent[1].entries and sent[1].commit == 5  # one message
    m._send_all([append("n2", 5, 2, [], commit=6)])
    assert len(sent) == 2
    # the hold time (50 ms) is up: it goes alone
    deadline = asyncio.get_running_loop().time() + 5
    while len(sent) < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert [(x.dst, x.commit) for x in sent[2:]] == [("n2", 6)]
