"""What each machine is working on, as the MachineContext the MES publishes retained."""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from microfactory.contract import MachineContext
from microfactory.mes.models import Machine, OperationRun, RunStatus
from microfactory.mes.timeutil import now, to_ns

log = logging.getLogger(__name__)


class ContextPublisher(Protocol):
    """Anything that can put a machine's context on the wire (the MQTT bridge, a test spy)."""

    def publish_context(self, context: MachineContext) -> None: ...


class NullPublisher:
    """Used when no broker is configured: the context lives only in the database."""

    def publish_context(self, context: MachineContext) -> None:
        log.debug("no broker: context of %s not published", context.machine)


def active_run(session: Session, machine_id: str) -> OperationRun | None:
    return session.scalars(
        select(OperationRun)
        .where(OperationRun.machine_id == machine_id, OperationRun.status == RunStatus.running)
        .order_by(OperationRun.id.desc())
    ).first()


def machine_context(session: Session, site: str, machine_id: str) -> MachineContext:
    """The context of a machine now: its running operation run, or an empty one."""
    run = active_run(session, machine_id)
    if run is None:
        return MachineContext(site=site, machine=machine_id, since_ns=to_ns(now()))
    segment_start = run.segments[-1].started_at if run.segments else run.started_at
    batch = run.batch
    return MachineContext(
        site=site,
        machine=machine_id,
        order=batch.order.code,
        batch=batch.lot_number,
        operation=f"{run.operation.seq}:{run.operation.name}",
        operator=run.segments[-1].operator if run.segments else run.operator,
        product=batch.order.product.code,
        since_ns=to_ns(segment_start),
    )


def all_contexts(session: Session, site: str) -> list[MachineContext]:
    ids = session.scalars(select(Machine.id).order_by(Machine.id)).all()
    return [machine_context(session, site, m) for m in ids]
