"""Exceptions raised by the actor runtime.

Names follow trio's habit of naming the condition of the resource: a mailbox is *full*, an
actor is *stopped*, an ask *timed out*, a spec is *invalid*, a child *crashed*.
"""

from __future__ import annotations

__all__ = [
    "ActorError",
    "ActorStopped",
    "AskTimeout",
    "ChildCrashed",
    "InvalidSpec",
    "MailboxFull",
    "RestartIntensityExceeded",
]


class ActorError(Exception):
    """Base class of every error the actor runtime raises."""


class MailboxFull(ActorError):
    """The actor's mailbox had no room and its overflow policy refuses the message.

    Raised by :meth:`ActorRef.tell_nowait` under ``Overflow.BLOCK`` and ``Overflow.FAIL``, by
    :meth:`ActorRef.ask` under ``Overflow.FAIL`` and ``Overflow.DROP_NEWEST``, and delivered to
    an asker whose queued request was discarded by ``Overflow.DROP_OLDEST``.
    """


class ActorStopped(ActorError):
    """The actor is stopping or stopped, so the message cannot be delivered or answered.

    When the actor crashed while handling an ask, the asker gets this error with the crash as
    ``__cause__``.
    """


class AskTimeout(ActorError, TimeoutError):
    """No reply arrived within the ``timeout`` given to :meth:`ActorRef.ask`."""


class InvalidSpec(ActorError, ValueError):
    """A bad argument: a supervisor or child specification, a mailbox size, an ask timeout."""


class RestartIntensityExceeded(ActorError):
    """A supervisor saw more than ``max_restarts`` restarts within ``within`` seconds.

    It stopped its children and raised this out of :meth:`Supervisor.run`, with the last
    :class:`ChildCrashed` as ``__cause__``.
    """


class ChildCrashed(ActorError):
    """A supervised child failed. ``name`` is the child's name; ``__cause__`` is its error.

    Raised by :meth:`Supervisor.start_child` when a child fails before it has started, and
    used as the ``__cause__`` of :exc:`RestartIntensityExceeded` when a supervisor escalates.
    """

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message if message is not None else f"child {name!r} crashed")
