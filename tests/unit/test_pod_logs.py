"""The lossless log reader without a cluster: KeptLog (bytes -> kept file, displayed lines) and PodLogs' seams.

Streams through the real API server are in tests/sandbox/test_pod_logs_sandbox.py; these cover the byte-level
promises exactly: every byte once, whatever the chunking, cuts and restarts.
"""

import json
import threading
from types import SimpleNamespace

import pytest

from tasks.cloud.pod_logs import DISPLAY_BYTES, KeptLog, PodLogs
from tasks.render.redact import REDACTED, Scrubber


def progress_bar(total: int) -> bytes:
    """What tqdm draws without a newline: ``\\r`` redraws of one line, ``total`` bytes."""
    out, n = bytearray(), 0
    while len(out) < total:
        out += f"\r{n * 100 // total:3d}%|{'#' * (n * 20 // total):<20}| {n}/{total}".encode()
        n = len(out)
    return bytes(out)


def feed_in(kept: KeptLog, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        kept.feed(data[i:i + size])


def test_progress_bar_without_newline_is_kept_whole_and_displayed_capped(tmp_path):
    shown = []
    data = progress_bar(20 << 20) + b"\ntraining done\nsaved model\n"
    kept = KeptLog(tmp_path / "p.log", "[idx=0 pod=p]", shown.append)
    feed_in(kept, data, 65536)
    kept.finish()
    assert (tmp_path / "p.log").read_bytes() == data
    assert shown[-2:] == ["[idx=0 pod=p] training done", "[idx=0 pod=p] saved model"]
    bar = shown[0]
    assert len(shown) == 3 and len(bar.encode()) < DISPLAY_BYTES + 200
    assert "100%" in bar or "99%" in bar  # what a terminal shows last
    assert "line cut for display" in bar


def test_a_newline_free_log_is_kept_whole_and_its_last_line_shown_when_the_container_ends(tmp_path):
    shown = []
    data = b"x" * (3 << 20)
    kept = KeptLog(tmp_path / "p.log", "[p]", shown.append)
    feed_in(kept, data, 4096)
    assert shown == []  # held back: the line is not complete yet
    kept.finish()
    assert (tmp_path / "p.log").read_bytes() == data
    assert len(shown) == 1 and shown[0].startswith("[p] " + "x" * 100) and "line cut for display" in shown[0]


@pytest.mark.parametrize("size", [1, 3, 7, 4096])
def test_any_chunking_keeps_the_same_bytes_and_lines(tmp_path, size):
    shown = []
    data = "one\r\ntwo\n\nthr\u00e9e \u4e2d\U0001F600\nbad \xff\xfe bytes\nlast".encode("utf-8", "surrogateescape")
    data = data.replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe")
    kept = KeptLog(tmp_path / "p.log", "[p]", shown.append)
    feed_in(kept, data, size)
    kept.finish()
    assert (tmp_path / "p.log").read_bytes() == data
    assert shown == ["[p] one", "[p] two", "[p] ", "[p] thr\u00e9e \u4e2d\U0001F600", "[p] bad \ufffd\ufffd bytes",
                     "[p] last"]


def test_a_secret_across_chunks_and_across_an_early_write_is_scrubbed(tmp_path):
    secret = "s3cr3t-" + "k" * 40
    scrub = Scrubber([secret])
    kept = KeptLog(tmp_path / "p.log", "[p]", lambda line: None, scrub, hold_bytes=1000)
    data = (b"a" * 990 + secret.encode() + b"b" * 2000) + b"\nline " + secret.encode() + b"\n"
    feed_in(kept, data, 13)
    kept.finish()
    text = (tmp_path / "p.log").read_text()
    assert secret not in text and text.count(REDACTED) == 2
    assert text == data.decode().replace(secret, REDACTED)


def test_a_new_reader_continues_the_kept_file_from_its_position(tmp_path):
    """A re-attach or task retry: the kept file continues where the position says, nothing twice."""
    path = tmp_path / "p.log"
    first = KeptLog(path, "[p]", lambda line: None)
    first.feed(b"one\ntwo\nthr")  # 'thr' is held back, never written
    first.close()  # the process dies here
    with path.open("ab") as fh:
        fh.write(b"half-written garbage")  # a write the position never recorded
    again = KeptLog(path, "[p]", lambda line: None)
    assert again.consumed == len(b"one\ntwo\n")
    full = b"one\ntwo\nthree\nfour\n"
    again.feed(full[again.consumed:])
    again.finish()
    assert path.read_bytes() == full
    assert json.loads((tmp_path / "p.log.pos").read_text())["complete"] is True
    done = KeptLog(path, "[p]", lambda line: None)
    done.feed(b"anything")
    assert path.read_bytes() == full


def test_bytes_that_cannot_be_read_leave_a_marker_line(tmp_path):
    kept = KeptLog(tmp_path / "p.log", "[p]", lambda line: None)
    kept.feed(b"one\ntw")
    kept.finish(missing="the pod was deleted")
    assert (tmp_path / "p.log").read_text() == "one\ntw\n[ask-batch: log incomplete: the pod was deleted]\n"


# ------------------------------------------------------------------ PodLogs with a scripted API


def not_found() -> Exception:
    """What the kubernetes client raises for a pod that is gone (an ApiException's ``status`` 404)."""
    gone = Exception("Not Found")
    gone.status = 404
    return gone


class ScriptedCore:
    """Follow requests answer from a script (a list of chunks, or an exception, per request); the container runs
    as long as follows are left in the script; a plain read answers ``full`` (or raises it)."""

    def __init__(self, follows, full):
        self.follows, self.full, self.requests = list(follows), full, []

    @property
    def phase(self):
        return "Running" if self.follows else "Succeeded"

    def read_namespaced_pod_log(self, name, namespace, *, follow=False, **kwargs):
        self.requests.append(follow)
        chunks = self.follows.pop(0) if follow and self.follows else self.full
        if isinstance(chunks, Exception):
            raise chunks
        return SimpleNamespace(stream=lambda n: iter(chunks), release_conn=lambda: None, close=lambda: None)

    def read_namespaced_pod(self, *args, **kwargs):
        cs = SimpleNamespace(name="workload", restart_count=0,
                             state=SimpleNamespace(terminated=self.phase != "Running"))
        return SimpleNamespace(status=SimpleNamespace(phase=self.phase, container_statuses=[cs]))


def test_a_stream_cut_mid_line_resumes_after_the_bytes_already_kept(tmp_path):
    shown = []
    # The server ends each follow mid-line; each new one replays from the start; a plain read ends the attempt.
    core = ScriptedCore([[b"one\ntw"], [b"one\ntwo\nthr"]], [b"one\ntwo\nthree\n"])
    logs = PodLogs(core, "ns", "workload", shown.append, tmp_path)
    logs.seen("p-1", 4, started=True, ended=False)
    for _ in range(200):
        if not core.follows:
            break
        threading.Event().wait(0.05)
    assert logs.close(grace=5, catch_up=10) == {}
    assert shown == ["[idx=4 pod=p-1] one", "[idx=4 pod=p-1] two", "[idx=4 pod=p-1] three"]
    assert (tmp_path / "p-1.log").read_text() == "one\ntwo\nthree\n"
    assert core.requests[-1] is False  # the end is confirmed by a plain read


class SlowKubelet:
    """A container that has exited but whose follow stream stays open until ``shutdown()``."""

    def __init__(self, streamed, full, *, after_cut="end"):
        self.streamed, self.full, self.after_cut = streamed, full, after_cut
        self.cut, self.delivered, self.requests = threading.Event(), threading.Event(), []

    def read_namespaced_pod_log(self, *args, follow=False, **kwargs):
        self.requests.append(follow)
        if not follow:
            return SimpleNamespace(stream=lambda n: iter([self.full]), release_conn=lambda: None)

        def stream(n):
            yield from self.streamed
            self.delivered.set()
            self.cut.wait(30)
            if self.after_cut == "raise":
                raise ConnectionResetError("shut down")
            if self.after_cut == "garbage":  # SSLSocket.shutdown drops TLS: raw records may follow
                yield b"e\n\x17\x03\x03\x00\x1a\xfe junk\nmore junk\n"

        return SimpleNamespace(stream=stream, shutdown=self.cut.set, release_conn=lambda: None, close=lambda: None)

    def read_namespaced_pod(self, *args, **kwargs):
        return SimpleNamespace(status=SimpleNamespace(phase="Succeeded", container_statuses=[]))


@pytest.mark.parametrize("after_cut", ["end", "raise", "garbage"])
def test_a_follow_still_open_after_the_grace_is_cut_and_read_once_more(tmp_path, after_cut):
    shown = []
    kubelet = SlowKubelet([b"one\ntwo\nthr"], b"one\ntwo\nthree\nfour\nfive", after_cut=after_cut)
    logs = PodLogs(kubelet, "ns", "workload", shown.append, tmp_path)
    logs.seen("p-2", 1, started=True, ended=False)
    assert kubelet.delivered.wait(10)
    assert logs.close(grace=0.2, catch_up=10) == {}
    assert kubelet.requests == [True, False]
    assert (tmp_path / "p-2.log").read_text() == "one\ntwo\nthree\nfour\nfive"
    assert [s.split("] ")[1] for s in shown] == ["one", "two", "three", "four", "five"]


def test_at_most_max_streams_follow_at_once_and_ended_pods_are_read_once(tmp_path):
    """Two follow slots held by long-running pods: the other pods are read once, without follow, as they end."""
    hold = threading.Event()
    live, most = [0], [0]
    lock = threading.Lock()

    class Core:
        def read_namespaced_pod_log(self, name, namespace, *, follow=False, **kwargs):
            def stream(n):
                with lock:
                    live[0] += follow
                    most[0] = max(most[0], live[0])
                try:
                    if follow:
                        hold.wait(30)
                    yield f"log of {name}\n".encode()
                finally:
                    with lock:
                        live[0] -= follow
            return SimpleNamespace(stream=stream, release_conn=lambda: None, close=lambda: None,
                                   shutdown=hold.set)

        def read_namespaced_pod(self, *args, **kwargs):
            return SimpleNamespace(status=SimpleNamespace(phase="Succeeded", container_statuses=[]))

    logs = PodLogs(Core(), "ns", "workload", lambda line: None, tmp_path, max_streams=2, readers=1)
    for i in range(2):
        logs.seen(f"long-{i}", i, started=True, ended=False)
    for i in range(2, 40):
        logs.seen(f"short-{i}", i, started=True, ended=False)
        logs.seen(f"short-{i}", i, started=True, ended=True)
    for i in range(2, 40):  # read while both follow slots are still held
        path = tmp_path / f"short-{i}.log.pos"
        for _ in range(200):
            if path.exists() and json.loads(path.read_text())["complete"]:
                break
            threading.Event().wait(0.05)
        assert (tmp_path / f"short-{i}.log").read_text() == f"log of short-{i}\n"
    hold.set()
    assert logs.close(grace=5, catch_up=10) == {}
    assert most[0] <= 2
    assert len([t for t in threading.enumerate() if t.name.startswith("log-")]) <= 3 + 3  # no thread per pod


def test_a_pod_deleted_before_its_log_was_read_is_reported_incomplete(tmp_path):
    core = ScriptedCore([[b"first line\n"]], not_found())
    logs = PodLogs(core, "ns", "workload", lambda line: None, tmp_path)
    logs.seen("p-3", 0, started=True, ended=False)
    incomplete = logs.close(grace=5, catch_up=10)
    assert "deleted" in incomplete["p-3"]
    assert (tmp_path / "p-3.log").read_text().splitlines()[-1].startswith("[ask-batch: log incomplete:")


class TricklingNode:
    """An ended container whose log arrives slowly: ``chunks`` (None: a pause with no byte) every ``pause`` s."""

    def __init__(self, chunks, pause):
        self.chunks, self.pause = chunks, pause

    def _body(self):
        for chunk in self.chunks:
            threading.Event().wait(self.pause)
            yield chunk or b""

    def read_namespaced_pod_log(self, *args, follow=False, **kwargs):
        return SimpleNamespace(stream=lambda n: self._body(), release_conn=lambda: None, close=lambda: None)


def test_a_long_log_still_arriving_when_the_job_ends_is_read_to_its_end(tmp_path):
    """The catch-up after the Job ends gives up on a stalled read, not on a long one: bytes arriving count."""
    lines = [f"line {i}\n".encode() for i in range(40)]
    logs = PodLogs(TricklingNode(lines, 0.05), "ns", "workload", lambda line: None, tmp_path)
    logs.seen("p-1", 0, started=True, ended=True)
    assert logs.close(grace=0.1, catch_up=0.5) == {}  # 2 s of reading, never 0.5 s without a byte
    assert (tmp_path / "p-1.log").read_bytes() == b"".join(lines)


def test_a_read_that_stalls_after_the_job_ends_is_given_up_and_the_kept_log_says_so(tmp_path):
    logs = PodLogs(TricklingNode([b"first\n"] + [None] * 200, 0.05), "ns", "workload", lambda line: None, tmp_path)
    logs.seen("p-1", 0, started=True, ended=True)
    why = logs.close(grace=0.1, catch_up=0.5)
    assert list(why) == ["p-1"] and "stalled" in why["p-1"]
    logs.stop()
    assert (tmp_path / "p-1.log").read_text() == f"first\n[ask-batch: log incomplete: {why['p-1']}]\n"


class DeletedAsItEnds:
    """A container that may restart (restartPolicy OnFailure) and whose pod is deleted the moment its attempt
    ends. Its follow yields ``lines`` and then either ends by itself (``ends="server"``: the node saw the
    container exit) or stays open until ``shutdown()`` (``ends="cut"``: the reader cut it on the pod's event).
    Once the follow is over, the pod reads as terminated and being deleted (``pod_after="deleting"``) or is
    gone (``pod_after="gone"``); any plain read of the log is a 404 (the pod went in between)."""

    def __init__(self, lines, *, ends, pod_after):
        self.lines, self.ends, self.pod_after = lines, ends, pod_after
        self.followed, self.cut, self.requests = threading.Event(), threading.Event(), []

    def read_namespaced_pod_log(self, *args, follow=False, **kwargs):
        self.requests.append(follow)
        if not follow:
            raise not_found()

        def stream(n):
            yield from self.lines
            if self.ends == "cut":
                self.cut.wait(30)
            self.followed.set()

        return SimpleNamespace(stream=stream, shutdown=self.cut.set, release_conn=lambda: None, close=lambda: None)

    def read_namespaced_pod(self, *args, **kwargs):
        if not self.followed.is_set():
            state = SimpleNamespace(waiting=None, running=SimpleNamespace(), terminated=None)
            cs = SimpleNamespace(name="workload", restart_count=0, state=state, last_state=None)
            return SimpleNamespace(status=SimpleNamespace(phase="Running", container_statuses=[cs]),
                                   metadata=SimpleNamespace(deletion_timestamp=None))
        if self.pod_after == "gone":
            raise not_found()
        state = SimpleNamespace(waiting=None, running=None, terminated=SimpleNamespace(exit_code=143))
        cs = SimpleNamespace(name="workload", restart_count=0, state=state, last_state=None)
        return SimpleNamespace(status=SimpleNamespace(phase="Running", container_statuses=[cs]),
                               metadata=SimpleNamespace(deletion_timestamp="2026-11-30T18:00:00Z"))


FOLLOWED_TO_ITS_END = ("the pod was deleted as this attempt ended: its log was followed to the end of the stream "
                       "but could not be read again to confirm that end")
NOT_READ_TO_ITS_END = "the pod was deleted before its log was read to its end"


@pytest.mark.parametrize("pod_after", ["deleting", "gone"])
def test_a_follow_the_server_ended_then_a_pod_deleted_says_the_end_was_not_confirmed(tmp_path, pod_after):
    """Whether the pod is gone at the next pod read or only at the log read after it, the report says the same:
    every byte the stream had was kept, only the end was not confirmed."""
    core = DeletedAsItEnds([b"attempt 0 starts\n", b"attempt 0 stopped\n"], ends="server", pod_after=pod_after)
    logs = PodLogs(core, "ns", "workload", lambda line: None, tmp_path)
    logs.seen("p-5", 0, started=True, ended=False, may_restart=True)
    assert core.followed.wait(10)
    assert logs.close(grace=5, catch_up=10) == {"p-5": FOLLOWED_TO_ITS_END}
    assert (tmp_path / "p-5.log").read_text() == ("attempt 0 starts\nattempt 0 stopped\n"
                                                  f"[ask-batch: log incomplete: {FOLLOWED_TO_ITS_END}]\n")


@pytest.mark.parametrize("pod_after", ["deleting", "gone"])
def test_a_follow_cut_by_the_reader_then_a_pod_deleted_says_the_log_was_not_read_to_its_end(tmp_path, pod_after):
    """The reader cut the follow itself (the pod's event said the container ended): it never saw the stream's
    end, so it must not claim it did."""
    core = DeletedAsItEnds([b"attempt 0 starts\n"], ends="cut", pod_after=pod_after)
    logs = PodLogs(core, "ns", "workload", lambda line: None, tmp_path)
    logs.seen("p-6", 0, started=True, ended=False, may_restart=True)
    for _ in range(200):  # the follow is open
        if core.requests:
            break
        threading.Event().wait(0.05)
    logs.seen("p-6", 0, started=True, ended=True, may_restart=True)
    assert core.followed.wait(10)
    assert logs.close(grace=5, catch_up=10) == {"p-6": NOT_READ_TO_ITS_END}
    assert (tmp_path / "p-6.log").read_text() == ("attempt 0 starts\n"
                                                  f"[ask-batch: log incomplete: {NOT_READ_TO_ITS_END}]\n")


def test_a_pod_deleted_while_running_after_a_follow_timed_out_is_not_said_to_be_followed_to_its_end(tmp_path):
    """The server ended a follow while the container still ran (a timeout, a proxy): that end is not the log's
    end, so when the next request finds the pod gone, the log was not read to its end."""
    core = ScriptedCore([[b"one\n"], not_found()], not_found())
    logs = PodLogs(core, "ns", "workload", lambda line: None, tmp_path)
    logs.seen("p-7", 0, started=True, ended=False)
    for _ in range(200):  # both follows asked for (the second one found the pod gone)
        if len(core.requests) >= 2:
            break
        threading.Event().wait(0.05)
    assert core.requests[:2] == [True, True]
    assert logs.close(grace=5, catch_up=10) == {"p-7": NOT_READ_TO_ITS_END}
    assert (tmp_path / "p-7.log").read_text() == f"one\n[ask-batch: log incomplete: {NOT_READ_TO_ITS_END}]\n"
