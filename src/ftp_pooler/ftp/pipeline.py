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
