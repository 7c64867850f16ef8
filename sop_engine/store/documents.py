"""SOP documents and their versions."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import select

from ..document import LoadedSop
from ..events import utcnow
from ..tables import (
    SopDocumentRow,
)
from .database import Database


class Documents(Database):
    def save_document(self, loaded: LoadedSop, created_by: str | None = None) -> SopDocumentRow:
        """Store a document; the same text again returns the stored version, changed text a new one
        (`created_by` is recorded on a new version only)."""
        sop = loaded.sop
        with self.session() as s, s.begin():
            latest = s.exec(
                select(SopDocumentRow)
                .where(SopDocumentRow.sop_id == sop.id)
                .order_by(SopDocumentRow.version.desc())
                .limit(1)
            ).first()
            if latest is not None and latest.content_hash == loaded.content_hash:
                return latest
            row = SopDocumentRow(
                base_dir=str(loaded.base_dir) if loaded.base_dir else None,
                sop_id=sop.id,
                version=(latest.version + 1) if latest else 1,
                name=sop.name,
                content_hash=loaded.content_hash,
                source=loaded.source,
                created_at=utcnow(),
                created_by=created_by,
            )
            s.add(row)
        return row

    def document_creator(self, sop_id: str) -> str | None:
        """Who stored version 1 of the SOP: the owner of its id."""
        with self.reading() as s:
            query = select(SopDocumentRow.created_by).where(SopDocumentRow.sop_id == sop_id)
            return s.exec(query.where(SopDocumentRow.version == 1)).first()

    def document_by_id(self, document_id: int) -> SopDocumentRow | None:
        with self.reading() as s:
            return s.get(SopDocumentRow, document_id)

    def documents(self) -> list[SopDocumentRow]:
        """The latest version of every SOP, by id."""
        with self.reading() as s:
            latest = select(SopDocumentRow.sop_id, func.max(SopDocumentRow.version).label("v"))
            latest = latest.group_by(SopDocumentRow.sop_id).subquery()
            query = select(SopDocumentRow).join(
                latest, (SopDocumentRow.sop_id == latest.c.sop_id) & (SopDocumentRow.version == latest.c.v)
            )
            return list(s.exec(query.order_by(SopDocumentRow.sop_id)))

    def versions(self, sop_id: str) -> list[SopDocumentRow]:
        with self.reading() as s:
            query = select(SopDocumentRow).where(SopDocumentRow.sop_id == sop_id)
            return list(s.exec(query.order_by(SopDocumentRow.version)))

    def document(self, sop_id: str, version: int | None = None) -> SopDocumentRow | None:
        with self.reading() as s:
            query = select(SopDocumentRow).where(SopDocumentRow.sop_id == sop_id)
            if version is not None:
                query = query.where(SopDocumentRow.version == version)
            return s.exec(query.order_by(SopDocumentRow.version.desc()).limit(1)).first()
