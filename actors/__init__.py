"""A small generic actor runtime on trio: actors, bounded mailboxes, refs, supervisors.

It knows nothing about messaging. See docs/actors.md for why it is shaped this way.

    ref = await nursery.start(run_actor, MyActor())
    ref.tell_nowait(msg); await ref.tell(msg); reply = await ref.ask(msg, timeout=1.0)

    async with open_supervisor("hub", [ChildSpec("registry", Registry)]) as sup:
        handle = await sup.start_child(ChildSpec("conn-1", serve_conn, Restart.TEMPORARY))
"""

from ._actor import Actor as Actor
from ._actor import ActorRef as ActorRef
from ._actor import ActorStatistics as ActorStatistics
from ._actor import Overflow as Overflow
from ._actor import run_actor as run_actor
from ._errors import ActorError as ActorError
from ._errors import ActorStopped as ActorStopped
from ._errors import AskTimeout as AskTimeout
from ._errors import ChildCrashed as ChildCrashed
from ._errors import InvalidSpec as InvalidSpec
from ._errors import MailboxFull as MailboxFull
from ._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._supervisor import ChildHandle as ChildHandle
from ._supervisor import ChildSpec as ChildSpec
from ._supervisor import Restart as Restart
from ._supervisor import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorStatistics as SupervisorStatistics
from ._supervisor import open_supervisor as open_supervisor

__all__ = [
    "Actor",
    "ActorError",
    "ActorRef",
    "ActorStatistics",
    "ActorStopped",
    "AskTimeout",
    "ChildCrashed",
    "ChildHandle",
    "ChildSpec",
    "InvalidSpec",
    "MailboxFull",
    "Overflow",
    "Restart",
    "RestartIntensityExceeded",
    "Strategy",
    "Supervisor",
    "SupervisorStatistics",
    "open_supervisor",
    "run_actor",
]
