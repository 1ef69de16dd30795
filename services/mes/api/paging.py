"""Limit/offset pagination that every list endpoint shares."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from microfactory.mes.api.schemas import Page

M = TypeVar("M", bound=BaseModel)


def paginate(
    session: Session, query: Select[Any], limit: int, offset: int, schema: type[M]
) -> Page[M]:
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = session.scalars(query.limit(limit).offset(offset)).all()
    return Page[schema](  # type: ignore[valid-type]
        items=[schema.model_validate(r) for r in rows],
        total=int(total or 0),
        limit=limit,
        offset=offset,
    )
