"""Which reply answers which command, when several commands are sent at once. No I/O.

An FTP server answers commands in the order it reads them (RFC 959 section
4.2: "the server must send a reply for every command"), so a client may send
commands whose replies it does not need before the next one together in one
write, and pair replies with commands by position: a *pipeline*. The
bookkeeping is :class:`ReplyMatcher`: the session tells it which verbs it
sent, in order, and hands it each reply read; it says which command a reply
answers, or that the reply answers none (an unasked reply, dropped as
:func:`protocol.is_unsolicited` decides for a single command), or that the
server broke the order (:class:`PipelineAnomaly`), in which case the session
stops pipelining to that server.

A reply that cannot answer the oldest waiting command but can answer a later
one (a ``229`` while ``SIZE`` is still unanswered) means the server skipped a
command or answered out of order: an anomaly, never an unasked reply, so a
pipelined answer is never dropped by mistake.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ftp_pooler.errors import FTPProtocolError
from ftp_pooler.ftp.protocol import Reply, is_unsolicited

TRANSFER_VERBS = frozenset({"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"})
"""Commands answered by a 1xx before their final reply (RFC 959 section 4.2)."""


class PipelineAnomaly(FTPProtocolError):
    """The server's replies do not line up with the commands sent together.

    The session it happened on is out of step (broken); the server is then
    talked to one command at a time.
    """


@dataclass(frozen=True, slots=True)
class Answer:
    """What one reply is, as far as the commands sent are concerned.

    Attributes:
        verb: The command it answers, or ``None`` for a reply nobody asked for.
        reply: The reply itself.
        final: Whether it ends its command (not a 1xx); ``False`` when unasked.
    """

    verb: str | None
    reply: Reply
    final: bool


class ReplyMatcher:
    """Pairs replies with the commands sent, oldest first (see the module docstring).

    Usage: :meth:`sent` for each command as it goes out (verbs, upper case),
    then :meth:`match` for each reply read until :attr:`waiting` is empty.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: deque[str] = deque()

    def sent(self, *verbs: str) -> None:
        """Record commands sent, in the order they were written."""
        self._waiting.extend(verb.upper() for verb in verbs)

    @property
    def waiting(self) -> tuple[str, ...]:
        """Verbs sent and not yet finally answered, oldest first."""
        return tuple(self._waiting)

    def match(self, reply: Reply) -> Answer:
        """Which command ``reply`` answers.

        - nothing waiting: unasked;
        - a 1xx: preliminary for the oldest command if it is a transfer, else
          unasked (as a single command reads it);
        - a code that belongs to other commands (RFC 959 section 4.2.2,
          :func:`protocol.is_unsolicited`): an anomaly if a later waiting
          command owns it, else unasked;
        - anything else finally answers the oldest command.

        Raises:
            PipelineAnomaly: The reply answers a command sent after one still unanswered.
        """
        if not self._waiting:
            return Answer(None, reply, final=False)
        head = self._waiting[0]
        if reply.is_preliminary:
            if head in TRANSFER_VERBS:
                return Answer(head, reply, final=False)
            if any(verb in TRANSFER_VERBS for verb in self._waiting):
                raise PipelineAnomaly(f"{head}: reply {reply} came before its answer")
            return Answer(None, reply, final=False)
        if is_unsolicited(head, reply):
            later = list(self._waiting)[1:]
            if any(not is_unsolicited(verb, reply) for verb in later):
                raise PipelineAnomaly(f"{head}: reply {reply} answers a later command")
            return Answer(None, reply, final=False)
        self._waiting.popleft()
        return Answer(head, reply, final=True)


TRANSFER_ENDS = frozenset({226, 250})
"""Success codes that end a transfer (RFC 959 section 4.2: 226 closing data
connection, 250 requested file action completed) and that neither ``SIZE``
(213) nor ``RNFR`` (350) ever gives."""


TRANSFER_FAILURES = frozenset({425, 426, 451, 452, 551, 552})
"""Failure codes of a transfer under way (RFC 959 section 4.2: ``RETR``/``STOR``
after their 1xx) that the commands written after its data never give: ``SIZE``
answers 213, 550 or 500-504 (RFC 3659 section 4.1), ``RNFR`` 350, 450, 550,
500-502, 421 or 530 (RFC 959 section 5.4). Such a reply after an early
command's place is the transfer's: the reply before it was the early one's."""


def ends_transfer(verb: str, reply: Reply) -> bool:
    """Whether ``reply`` can be the final reply of the transfer command ``verb``.

    Not a 1xx, not a code owned by other commands (:func:`protocol.is_unsolicited`:
    a 229, a 350), and not 213 (a status reply: SIZE, MDTM, STAT), which no
    transfer ends with. Errors (4xx/5xx) can.
    """
    return not reply.is_preliminary and reply.code != 213 and not is_unsolicited(verb, reply)


@dataclass(frozen=True, slots=True)
class TransferEnd:
    """How a transfer ended, and what the commands written after its data got.

    Attributes:
        final: The transfer command's final reply; ``None`` when not known (no
            reply that can only be it came before the time ran out).
        early: The answers to the commands written after the data, in order;
            ``None`` when none were sent or their answers cannot be trusted
            (``anomaly``), in which case they must be asked again.
        anomaly: What the server did wrong (for the log and the quirk); ``None``.
    """

    final: Reply | None
    early: tuple[Reply, ...] | None
    anomaly: str | None


class TransferEndMatcher:
    """Pairs the replies after a transfer's 1xx with the transfer and with commands
    written once its data ended, before its final reply came ("early" commands:
    ``SIZE`` and ``RNFR`` of an upload). No I/O.

    A server answers commands in the order it processes them (RFC 959 section
    4.2), and one that handles a transfer does not read the control
    connection until the transfer is over. So the first reply after the early
    commands went out is the transfer's, and the early ones were run after it:
    a ``SIZE`` answered after the ``226`` sees the whole file. A server that
    reads commands during a transfer (its ``SIZE`` or ``RNFR`` answered before
    the ``226``) breaks that order; that is told apart by the replies' codes:
    a ``213``, a ``350`` or a reply to the transfer's ``226``/``250`` where the
    order puts it are impossible in order, and so is a transfer's failure
    (:data:`TRANSFER_FAILURES`: ``426``, ``451``...) where an early answer
    should be: ``150``, SIZE's ``550`` (nothing stored yet), then STOR's
    ``451`` is a transient failure, never the ``550``'s FILE_NOT_FOUND. The
    early answers are then not used (:attr:`TransferEnd.early` ``None``) and
    the transfer's final reply is the ``226``/``250`` among the replies,
    else the last that can end a transfer. All ``1 + len(early)`` replies
    are awaited in either case, so the session stays in step.

    Usage: :meth:`feed` each reply read; :meth:`sent` when the early commands
    are written (only while :attr:`done` is false); read :attr:`done`, then
    :meth:`result` (or :meth:`result` after a timeout: what can be known).
    """

    __slots__ = ("_early", "_final", "_replies", "_verb")

    def __init__(self, verb: str) -> None:
        self._verb = verb.upper()
        self._final: Reply | None = None
        self._early: tuple[str, ...] = ()
        self._replies: list[Reply] = []

    def sent(self, *verbs: str) -> None:
        """Record the early commands, written now, before the final reply came.

        Raises:
            ValueError: The final reply already came, or early commands were already sent.
        """
        if self._final is not None or self._early:
            raise ValueError("early commands only once, before the transfer's final reply")
        self._early = tuple(verb.upper() for verb in verbs)

    @property
    def done(self) -> bool:
        """Whether every expected reply was read."""
        if not self._early:
            return self._final is not None
        return len(self._replies) == 1 + len(self._early)

    def feed(self, reply: Reply) -> bool:
        """Take one reply; whether it answers nothing sent (an unasked reply, to drop)."""
        if reply.is_preliminary:
            return True
        if not self._early:
            if is_unsolicited(self._verb, reply):
                return True
            self._final = reply
            return False
        if all(is_unsolicited(verb, reply) for verb in (self._verb, *self._early)):
            return True
        self._replies.append(reply)
        return False

    def result(self) -> TransferEnd:
        """What the replies read so far say (see the class docstring)."""
        if not self._early:
            return TransferEnd(self._final, None, None)
        replies = self._replies
        if not self.done:
            missing = self._early[max(0, len(replies) - 1) :]
            ends = [r for r in replies if r.code in TRANSFER_ENDS]
            final = ends[0] if ends else None
            return TransferEnd(final, None, f"no reply to {' '.join(missing)}")
        first, *rest = replies
        in_order = ends_transfer(self._verb, first) and all(
            not is_unsolicited(verb, answer)
            and answer.code not in TRANSFER_ENDS
            and answer.code not in TRANSFER_FAILURES
            for verb, answer in zip(self._early, rest, strict=True)
        )
        if in_order:
            return TransferEnd(first, tuple(rest), None)
        ends = [r for r in replies if r.code in TRANSFER_ENDS]
        if ends:
            final = ends[0]
        else:
            final = next((r for r in reversed(replies) if ends_transfer(self._verb, r)), None)
        shown = ", ".join(str(r.code) for r in replies)
        anomaly = f"{' '.join(self._early)} answered before the {self._verb} ended ({shown})"
        return TransferEnd(final, None, anomaly)
