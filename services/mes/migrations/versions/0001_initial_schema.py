"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:36:21.514148
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=True),
        sa.Column("entity_id", sa.String(length=64), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_ts"), ["ts"], unique=False)

    op.create_table(
        "config",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_config")),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_events")),
    )
    op.create_table(
        "gaps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gaps")),
        sa.UniqueConstraint("event_id", name=op.f("uq_gaps_event_id")),
    )
    with op.batch_alter_table("gaps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gaps_machine_id"), ["machine_id"], unique=False)

    op.create_table(
        "machine_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("previous", sa.String(length=16), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_states")),
        sa.UniqueConstraint("event_id", name=op.f("uq_machine_states_event_id")),
    )
    with op.batch_alter_table("machine_states", schema=None) as batch_op:
        batch_op.create_index("ix_machine_states_machine_ts", ["machine_id", "ts_ns"], unique=False)

    op.create_table(
        "machines",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("nominal_power_w", sa.Float(), nullable=True),
        sa.Column("ideal_cycle_time_s", sa.Float(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
    )
    op.create_table(
        "material_lots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_number", sa.String(length=64), nullable=False),
        sa.Column("material", sa.String(length=200), nullable=False),
        sa.Column("supplier", sa.String(length=200), nullable=True),
        sa.Column("received_quantity", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_material_lots")),
        sa.UniqueConstraint("lot_number", name=op.f("uq_material_lots_lot_number")),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint("code", name=op.f("uq_products_code")),
    )
    op.create_table(
        "reason_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("planned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reason_codes")),
        sa.UniqueConstraint("kind", "code", name=op.f("uq_reason_codes_kind")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("machine_kind", sa.String(length=64), nullable=False),
        sa.Column("ideal_cycle_time_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_operations_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
        sa.UniqueConstraint("product_id", "seq", name=op.f("uq_operations_product_id")),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("due_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_orders_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("code", name=op.f("uq_orders_code")),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_number", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_batches_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint("lot_number", name=op.f("uq_batches_lot_number")),
    )
    op.create_table(
        "operation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("operation_id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_operation_runs_batch_id_batches")
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_operation_runs_machine_id_machines")
        ),
        sa.ForeignKeyConstraint(
            ["operation_id"],
            ["operations.id"],
            name=op.f("fk_operation_runs_operation_id_operations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operation_runs")),
    )
    with op.batch_alter_table("operation_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operation_runs_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_operation_runs_machine_id"), ["machine_id"], unique=False
        )

    op.create_table(
        "downtime",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("assigned_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_downtime_machine_id_machines")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["operation_runs.id"], name=op.f("fk_downtime_run_id_operation_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_downtime")),
    )
    with op.batch_alter_table("downtime", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_downtime_machine_id"), ["machine_id"], unique=False)

    op.create_table(
        "parts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("good", sa.Boolean(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("energy_wh", sa.Float(), nullable=True),
        sa.Column("cycle_time_s", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_parts_batch_id_batches")
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_parts_machine_id_machines")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["operation_runs.id"], name=op.f("fk_parts_run_id_operation_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parts")),
        sa.UniqueConstraint("event_id", name=op.f("uq_parts_event_id")),
        sa.UniqueConstraint("serial", name=op.f("uq_parts_serial")),
    )
    with op.batch_alter_table("parts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_parts_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index("ix_parts_machine_ts", ["machine_id", "completed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_parts_run_id"), ["run_id"], unique=False)

    op.create_table(
        "run_segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_run_segments_machine_id_machines")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["operation_runs.id"], name=op.f("fk_run_segments_run_id_operation_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_segments")),
    )
    with op.batch_alter_table("run_segments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_run_segments_machine_start", ["machine_id", "started_at"], unique=False
        )

    op.create_table(
        "consumptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("material_lot_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("part_id", sa.Integer(), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_consumptions_batch_id_batches")
        ),
        sa.ForeignKeyConstraint(
            ["material_lot_id"],
            ["material_lots.id"],
            name=op.f("fk_consumptions_material_lot_id_material_lots"),
        ),
        sa.ForeignKeyConstraint(
            ["part_id"], ["parts.id"], name=op.f("fk_consumptions_part_id_parts")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["operation_runs.id"], name=op.f("fk_consumptions_run_id_operation_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consumptions")),
    )
    with op.batch_alter_table("consumptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consumptions_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_consumptions_material_lot_id"), ["material_lot_id"], unique=False
        )

    op.create_table(
        "scrap",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("part_id", sa.Integer(), nullable=True),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machines.id"], name=op.f("fk_scrap_machine_id_machines")
        ),
        sa.ForeignKeyConstraint(["part_id"], ["parts.id"], name=op.f("fk_scrap_part_id_parts")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["operation_runs.id"], name=op.f("fk_scrap_run_id_operation_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scrap")),
    )
    with op.batch_alter_table("scrap", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scrap_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scrap", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scrap_run_id"))

    op.drop_table("scrap")
    with op.batch_alter_table("consumptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consumptions_material_lot_id"))
        batch_op.drop_index(batch_op.f("ix_consumptions_batch_id"))

    op.drop_table("consumptions")
    with op.batch_alter_table("run_segments", schema=None) as batch_op:
        batch_op.drop_index("ix_run_segments_machine_start")

    op.drop_table("run_segments")
    with op.batch_alter_table("parts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_parts_run_id"))
        batch_op.drop_index("ix_parts_machine_ts")
        batch_op.drop_index(batch_op.f("ix_parts_batch_id"))

    op.drop_table("parts")
    with op.batch_alter_table("downtime", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_downtime_machine_id"))

    op.drop_table("downtime")
    with op.batch_alter_table("operation_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_operation_runs_machine_id"))
        batch_op.drop_index(batch_op.f("ix_operation_runs_batch_id"))

    op.drop_table("operation_runs")
    op.drop_table("batches")
    op.drop_table("orders")
    op.drop_table("operations")
    op.drop_table("users")
    op.drop_table("reason_codes")
    op.drop_table("products")
    op.drop_table("material_lots")
    op.drop_table("machines")
    with op.batch_alter_table("machine_states", schema=None) as batch_op:
        batch_op.drop_index("ix_machine_states_machine_ts")

    op.drop_table("machine_states")
    with op.batch_alter_table("gaps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gaps_machine_id"))

    op.drop_table("gaps")
    op.drop_table("events")
    op.drop_table("config")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_ts"))

    op.drop_table("audit")
