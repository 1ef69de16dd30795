"""Genealogy both ways and the batch record a customer or an auditor asks for."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from microfactory import contract
from microfactory.mes import reports
from microfactory.mes.errors import NotFound
from microfactory.mes.models import (
    Batch,
    Consumption,
    Downtime,
    MaterialLot,
    OperationRun,
    Part,
    Scrap,
)
from microfactory.mes.settings import MesSettings
from microfactory.mes.timeutil import now, to_ns


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def _run(run: OperationRun) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "operation": {"seq": run.operation.seq, "name": run.operation.name},
        "machine_id": run.machine_id,
        "status": run.status,
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "operators": sorted({s.operator for s in run.segments if s.operator}),
        "segments": [
            {"start": _iso(s.started_at), "end": _iso(s.ended_at), "operator": s.operator}
            for s in run.segments
        ],
    }


def _consumption(c: Consumption) -> dict[str, Any]:
    lot = c.material_lot
    return {
        "material_lot": lot.lot_number,
        "material": lot.material,
        "supplier": lot.supplier,
        "quantity": c.quantity,
        "unit": lot.unit,
        "run_id": c.run_id,
        "part_id": c.part_id,
        "recorded_by": c.recorded_by,
        "recorded_at": _iso(c.recorded_at),
    }


def telemetry_window(batch: Batch, site: str) -> dict[str, Any]:
    """Where to find the batch's telemetry in InfluxDB: tag ``batch`` = lot number, time range."""
    starts = [r.started_at for r in batch.runs]
    ends = [r.ended_at or now() for r in batch.runs]
    if not starts:
        return {"available": False, "tag": {contract.CONTEXT_TAGS[1]: batch.lot_number}}
    start, end = min(starts), max(ends)
    flux = (
        f'from(bucket: "microfactory") |> range(start: {start.isoformat()}, '
        f"stop: {end.isoformat()}) |> filter(fn: (r) => r._measurement == "
        f'"{contract.MEASUREMENT_TELEMETRY}" and r.batch == "{batch.lot_number}" '
        f'and r.site == "{site}")'
    )
    return {
        "available": True,
        "measurement": contract.MEASUREMENT_TELEMETRY,
        "tag": {contract.TAG_SITE: site, contract.CONTEXT_TAGS[1]: batch.lot_number},
        "start": start.isoformat(),
        "end": end.isoformat(),
        "start_ns": to_ns(start),
        "end_ns": to_ns(end),
        "machines": sorted({r.machine_id for r in batch.runs}),
        "flux": flux,
    }


def batch_record(session: Session, batch: Batch, settings: MesSettings) -> dict[str, Any]:
    """Everything known about a batch: backward genealogy plus counts, energy, downtime."""
    order = batch.order
    consumptions = session.scalars(
        select(Consumption).where(Consumption.batch_id == batch.id).order_by(Consumption.id)
    ).all()
    run_ids = [r.id for r in batch.runs]
    scrap = session.scalars(select(Scrap).where(Scrap.run_id.in_(run_ids))).all()
    downtime = session.scalars(select(Downtime).where(Downtime.run_id.in_(run_ids))).all()
    return {
        "batch": {
            "id": batch.id,
            "lot_number": batch.lot_number,
            "quantity": batch.quantity,
            "status": batch.status,
            "created_at": _iso(batch.created_at),
            "completed_at": _iso(batch.completed_at),
        },
        "order": {
            "id": order.id,
            "code": order.code,
            "customer": order.customer,
            "quantity": order.quantity,
            "status": order.status,
        },
        "product": {"code": order.product.code, "name": order.product.name},
        "runs": [_run(r) for r in batch.runs],
        "materials": [_consumption(c) for c in consumptions],
        "progress": reports.batch_progress(session, batch),
        "energy": reports.batch_energy(session, batch, settings),
        "scrap": [
            {
                "run_id": s.run_id,
                "part_id": s.part_id,
                "quantity": s.quantity,
                "reason_code": s.reason_code,
                "note": s.note,
                "recorded_by": s.recorded_by,
            }
            for s in scrap
        ],
        "downtime": [
            {
                "id": d.id,
                "machine_id": d.machine_id,
                "start": _iso(d.started_at),
                "end": _iso(d.ended_at),
                "reason_code": d.reason_code,
                "note": d.note,
            }
            for d in downtime
        ],
        "telemetry": telemetry_window(batch, settings.site),
        "generated_at": now().isoformat(),
    }


def part_trace(session: Session, part: Part, settings: MesSettings) -> dict[str, Any]:
    """Backward genealogy of one part: its own data plus its batch's record."""
    own = {
        "id": part.id,
        "serial": part.serial,
        "machine_id": part.machine_id,
        "good": part.good,
        "quantity": part.quantity,
        "completed_at": _iso(part.completed_at),
        "energy_wh": part.energy_wh,
        "cycle_time_s": part.cycle_time_s,
        "run": _run(part.run) if part.run else None,
        "materials": [
            _consumption(c)
            for c in session.scalars(select(Consumption).where(Consumption.part_id == part.id))
        ],
    }
    batch = session.get(Batch, part.batch_id) if part.batch_id else None
    return {
        "part": own,
        "batch": batch_record(session, batch, settings) if batch else None,
    }


def material_forward(session: Session, lot_number: str) -> dict[str, Any]:
    """Forward genealogy: every batch, order and part a material lot reached."""
    lot = session.scalars(select(MaterialLot).where(MaterialLot.lot_number == lot_number)).first()
    if lot is None:
        raise NotFound("material lot", lot_number)
    consumptions = session.scalars(
        select(Consumption).where(Consumption.material_lot_id == lot.id)
    ).all()
    batches: dict[int, dict[str, Any]] = {}
    for c in consumptions:
        batch = session.get(Batch, c.batch_id)
        if batch is None:
            continue
        entry = batches.setdefault(
            batch.id,
            {
                "batch_id": batch.id,
                "lot_number": batch.lot_number,
                "order": batch.order.code,
                "order_id": batch.order_id,
                "customer": batch.order.customer,
                "product": batch.order.product.code,
                "quantity_consumed": 0.0,
                "specific_parts": [],
                "parts": [],
            },
        )
        entry["quantity_consumed"] += c.quantity
        if c.part_id is not None:
            entry["specific_parts"].append(c.part_id)
    for entry in batches.values():
        parts = session.scalars(select(Part).where(Part.batch_id == entry["batch_id"])).all()
        entry["parts"] = [
            {"id": p.id, "serial": p.serial, "good": p.good, "quantity": p.quantity} for p in parts
        ]
    used = sum(c.quantity for c in consumptions)
    return {
        "material_lot": lot.lot_number,
        "material": lot.material,
        "supplier": lot.supplier,
        "received_quantity": lot.received_quantity,
        "remaining_quantity": lot.received_quantity - used,
        "unit": lot.unit,
        "batches": list(batches.values()),
        "orders": sorted({e["order"] for e in batches.values()}),
    }


def _cell(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p class='none'>none recorded</p>"
    head = "".join(f"<th>{_cell(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _machine_energy_html(machine: dict[str, Any] | None) -> str:
    """The machines' energy over the runs by state (idle, setup, fault on their own)."""
    if not machine or not machine.get("known"):
        return ""
    rows = [
        {
            "state": r["state"],
            "seconds": f"{r['seconds']:.0f}",
            "energy_kwh": f"{r['energy_kwh']:.3f}",
            "co2e_kg": f"{r['co2e_kg']:.3f}",
        }
        for r in machine["by_state"]
    ]
    return (
        f"<p>The machines used {machine['energy_kwh']:.3f} kWh over the runs, of which "
        f"{machine['idle_setup_kwh']:.3f} kWh idle, in setup or faulted.</p>"
        + _table(rows, ["state", "seconds", "energy_kwh", "co2e_kg"])
    )


def batch_record_html(record: dict[str, Any]) -> str:
    """A self-contained printable page (inline CSS, no external assets)."""
    b, o, p = record["batch"], record["order"], record["product"]
    e, prog = record["energy"], record["progress"]
    runs = [
        {
            **r,
            "operation": f"{r['operation']['seq']} {r['operation']['name']}",
            "operators": ", ".join(r["operators"]),
        }
        for r in record["runs"]
    ]
    tel = record["telemetry"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Batch record {_cell(b["lot_number"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #111; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; width: 100%; }}
th, td {{ border: 1px solid #999; padding: .25em .5em; text-align: left; font-size: 90%; }}
th {{ background: #eee; }} .none {{ color: #666; font-style: italic; }}
@media print {{ body {{ margin: 0; }} }}
</style></head><body>
<h1>Batch record {_cell(b["lot_number"])}</h1>
<p>Order <b>{_cell(o["code"])}</b> for {_cell(o["customer"])} &mdash; product
<b>{_cell(p["code"])}</b> {_cell(p["name"])} &mdash; batch quantity {_cell(b["quantity"])},
status {_cell(b["status"])}</p>
<h2>Progress</h2>
<p>good {_cell(prog["good"])} / {_cell(prog["quantity"])}, scrap {_cell(prog["scrap"])}
({prog["percent"]:.1f} %)</p>
<h2>Operations</h2>
{_table(runs, ["operation", "machine_id", "status", "started_at", "ended_at", "operators"])}
<h2>Materials</h2>
{
        _table(
            record["materials"],
            [
                "material_lot",
                "material",
                "supplier",
                "quantity",
                "unit",
                "recorded_by",
                "recorded_at",
            ],
        )
    }
<h2>Energy</h2>
<p>{e["energy_kwh"]:.3f} kWh measured over {_cell(e["parts_with_energy"])} parts,
{e["co2e_kg"]:.3f} kg CO2e at {_cell(e["co2e_g_per_kwh"])} g/kWh.
{_cell(e["note"])}</p>
{_machine_energy_html(e.get("machine_energy"))}
<h2>Scrap</h2>
{_table(record["scrap"], ["run_id", "part_id", "quantity", "reason_code", "note", "recorded_by"])}
<h2>Downtime</h2>
{_table(record["downtime"], ["machine_id", "start", "end", "reason_code", "note"])}
<h2>Telemetry</h2>
<p>InfluxDB measurement {_cell(tel.get("measurement"))}, tag batch =
{_cell(b["lot_number"])}, from {_cell(tel.get("start"))} to {_cell(tel.get("end"))}.</p>
<p><small>generated {_cell(record["generated_at"])}</small></p>
</body></html>
"""
