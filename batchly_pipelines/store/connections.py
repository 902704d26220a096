"""QuickBooks connections in ``qbo_connections``: one row per organisation and realm, tokens encrypted at rest.

Tokens are encrypted by Fernet under ``BATCHLY_SECRET_KEY`` and left out of every ``repr``. A refresh runs under
:meth:`ConnectionStore.locked`: the row is locked (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN
IMMEDIATE`` transaction serialises writers) and re-read inside the lock, so another process's refresh is seen, and
the new pair is committed with ``token_version`` bumped before the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.schema import qbo_connections, utcnow


class TokenPair(Protocol):
    """An access/refresh token pair and when each expires (``quickbooks.oauth.TokenSet`` is one)."""

    @property
    def access_token(self) -> str: ...

    @property
    def refresh_token(self) -> str: ...

    @property
    def access_expires_at(self) -> datetime: ...

    @property
    def refresh_expires_at(self) -> datetime | None: ...

    @property
    def refresh_hard_expires_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class StoredTokens:
    """The decrypted token pair of a connection row. The tokens are left out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime | None
    refresh_hard_expires_at: datetime | None = None


@dataclass(frozen=True)
class ConnectionRecord:
    """One ``qbo_connections`` row with its tokens decrypted."""

    id: int
    organization_id: int
    realm_id: str
    environment: str
    base_url: str
    status: str
    status_reason: str | None
    token_version: int
    tokens: StoredTokens | None
    # set by ConnectionStore.save when this connection replaced another company's: its realms, and what of them
    # was removed or cleared (forget_company), per table
    replaced: tuple[str, ...] = ()
    cleared: Mapping[str, int] = field(default_factory=dict)


class CompanyMismatch(ValueError):
    """A connection to another QuickBooks company than the one the organisation's records are linked to."""

    sentence = True  # its message is the operator's sentence


def switch_hint(organization_id: int) -> str:
    """The explicit command that moves an organisation to another QuickBooks company."""
    return f"batchly-sync connect --org {organization_id} --switch-company"


def linked_records(conn: Connection, organization_id: int) -> int:
    """How many of the organisation's records are linked to QuickBooks objects."""
    st = s.qbo_sync_state.c
    linked = conn.execute(
        sa.select(sa.func.count()).where(st.organization_id == organization_id)
    ).scalar_one()
    unlinked_tables = (s.customers, s.items, s.invoices)
    orphans = sum(
        conn.execute(
            sa.select(sa.func.count()).where(t.c.organization_id == organization_id, t.c.qbo_id.is_not(None))
        ).scalar_one()
        for t in unlinked_tables
    )
    return int(max(linked, orphans))


def holds_connection(conn: Connection, organization_id: int, realm_id: str) -> bool:
    """Whether the organisation is (still) connected to ``realm_id``; the row is locked until the caller's
    transaction ends, so a reconnect or an unlink waits for a write-back that checked it."""
    c = qbo_connections.c
    query = (
        sa.select(c.id).where(c.organization_id == organization_id, c.realm_id == realm_id).with_for_update()
    )
    return conn.execute(query).first() is not None


def unlink_organization(engine: Engine, organization_id: int) -> dict[str, int]:
    """Forget the organisation's QuickBooks company (:func:`forget_company`): connections, links, bases, mirror,
    cursors, open reviews, pull errors; ``qbo_id`` cleared.

    One sync transaction (nothing is queued by it). Returns what was removed or cleared, per table.
    """
    with sync_transaction(engine) as conn:
        return forget_company(conn, organization_id)


def forget_company(
    conn: Connection, organization_id: int, *, keep_realm: str | None = None
) -> dict[str, int]:
    """Remove, in the caller's transaction, everything the organisation holds of its QuickBooks company: its
    connections (but the one to ``keep_realm``), links and merge bases, mirror rows and reconciled versions, pull
    cursors, open reviews (a link review names the old company's records), pull errors, the ``qbo_id`` of its
    records, and the webhook repair state of each realm it leaves that no organisation is connected to any more.

    The explicit switch (:func:`unlink_organization`) and a connection that replaces another company while nothing
    is linked (:meth:`ConnectionStore.save`) both use it. Clearing ``qbo_id`` writes Batchly rows: with records
    linked, call it in a sync transaction. Returns what was removed or cleared, per table (zeros included).
    """
    c = qbo_connections.c
    dropped = c.organization_id == organization_id
    if keep_realm is not None:
        dropped &= c.realm_id != keep_realm
    realms = set(conn.execute(sa.select(c.realm_id).where(dropped)).scalars())
    done = {qbo_connections.name: conn.execute(sa.delete(qbo_connections).where(dropped)).rowcount}
    for table in (s.qbo_sync_state, s.qbo_mirror, s.qbo_reconciled, s.sync_cursors, s.pull_errors):
        done[table.name] = conn.execute(
            sa.delete(table).where(table.c.organization_id == organization_id)
        ).rowcount
    conflicts = s.sync_conflicts.c
    done["sync_conflicts (open)"] = conn.execute(
        sa.delete(s.sync_conflicts).where(
            conflicts.organization_id == organization_id, conflicts.resolution == "pending_review"
        )
    ).rowcount
    for table in (s.customers, s.items, s.invoices):
        done[f"{table.name}.qbo_id"] = conn.execute(
            sa.update(table)
            .where(table.c.organization_id == organization_id, table.c.qbo_id.is_not(None))
            .values(qbo_id=None)
        ).rowcount
    still_connected = set(conn.execute(sa.select(c.realm_id).where(c.realm_id.in_(sorted(realms)))).scalars())
    repairs = s.qbo_webhook_realms.c
    done[s.qbo_webhook_realms.name] = conn.execute(
        sa.delete(s.qbo_webhook_realms).where(repairs.realm_id.in_(sorted(realms - still_connected)))
    ).rowcount
    return done


# how much earlier than the moment a connection was marked needs_reauth its realm's next sweep starts (the clocks of
# QuickBooks and of this database may differ; a wider CDC window only costs reads of what the mirror has)
REAUTH_REWIND_MARGIN = timedelta(minutes=5)


def rewind_repair_after_reauth(conn: Connection, realm_id: str, lost_access_at: datetime) -> None:
    """A connection of ``realm_id`` is connected again after waiting for re-authorisation since ``lost_access_at``:
    while it waited, the realm's drains settled events once the *other* organisations were pulled and its sweeps
    moved ``repaired_until`` on. Move the realm's sweep start back to before it lost access (and its last sweep
    back, so the next one is due now): that sweep brings the re-authorised organisation what it missed."""
    repairs = s.qbo_webhook_realms.c
    start = lost_access_at - REAUTH_REWIND_MARGIN
    conn.execute(
        sa.update(s.qbo_webhook_realms)
        .where(repairs.realm_id == realm_id, repairs.repaired_until > start)
        .values(repaired_until=start)
    )
    # a day before: older than any sweep interval, so the realm's next sweep is due at once
    due = start - timedelta(days=1)
    conn.execute(
        sa.update(s.qbo_webhook_realms)
        .where(repairs.realm_id == realm_id, repairs.swept_at > due)
        .values(swept_at=due)
    )


class ConnectionStore:
    """``qbo_connections`` with tokens encrypted by Fernet under ``BATCHLY_SECRET_KEY``.

    An organisation is bound to one QuickBooks company once any of its records is linked: :meth:`save` refuses a
    connection to another company (:class:`CompanyMismatch`), so a wrong pick on Intuit's consent screen can never send
    its invoices into somebody else's books. Moving to another company is the explicit :func:`unlink_organization`.
    """

    def __init__(self, engine: Engine, secret_key: str) -> None:
        self.engine = engine
        self._fernet = Fernet(secret_key.encode())

    def save(
        self, organization_id: int, realm_id: str, environment: str, base_url: str, tokens: TokenPair
    ) -> ConnectionRecord:
        """Store a freshly authorised connection (insert, or replace the tokens of the same org and realm).

        A connection to another company than the organisation's replaces it only while nothing is linked
        (:class:`CompanyMismatch` otherwise), and in the same transaction forgets what Batchly kept of the old
        company (:func:`forget_company`); the record returned names the replaced realms and what was cleared."""
        c = qbo_connections.c
        values = {
            "environment": environment,
            "base_url": base_url,
            **self._token_values(tokens),
            "status": "connected",
            "status_reason": None,
            "updated_at": utcnow(),
        }
        with self.engine.begin() as conn:
            # one save per organisation at a time: two racing authorisations cannot leave two companies behind
            conn.execute(
                sa.select(s.organizations.c.id)
                .where(s.organizations.c.id == organization_id)
                .with_for_update()
            )
            others = list(
                conn.execute(
                    sa.select(c.realm_id)
                    .where(c.organization_id == organization_id, c.realm_id != realm_id)
                    .with_for_update()
                ).scalars()
            )
            if others and (linked := linked_records(conn, organization_id)):
                raise CompanyMismatch(
                    f"organisation {organization_id} is bound to QuickBooks company {others[0]} ({linked} linked "
                    f"record(s)), but the authorisation was for company {realm_id}; nothing was stored. Connect "
                    f"again and pick company {others[0]}, or move the organisation with `{switch_hint(organization_id)}`"
                    " (it unlinks every record first)"
                )
            cleared: dict[str, int] = {}
            if others:  # nothing linked yet: the new company replaces the old one and what Batchly kept of it
                cleared = forget_company(conn, organization_id, keep_realm=realm_id)
            before = conn.execute(
                sa.select(c.id, c.status, c.updated_at)
                .where(c.organization_id == organization_id, c.realm_id == realm_id)
                .with_for_update()
            ).first()
            existing = before.id if before is not None else None
            if before is not None and before.status != "connected":  # re-authorised
                rewind_repair_after_reauth(conn, realm_id, before.updated_at)
            if existing is None:
                conn.execute(
                    sa.insert(qbo_connections).values(
                        organization_id=organization_id, realm_id=realm_id, token_version=1, **values
                    )
                )
            else:
                conn.execute(
                    sa.update(qbo_connections)
                    .where(c.id == existing)
                    .values(token_version=c.token_version + 1, **values)
                )
            record = self._load(conn, organization_id, realm_id, lock=False)
            if not others:
                return record
            return replace(record, replaced=tuple(sorted(set(others))), cleared=cleared)

    def load(self, organization_id: int, realm_id: str | None = None) -> ConnectionRecord:
        """The organisation's connection (the one for ``realm_id`` if given). Raises LookupError if there is none."""
        with self.engine.connect() as conn:
            return self._load(conn, organization_id, realm_id, lock=False)

    @contextmanager
    def locked(self, organization_id: int, realm_id: str) -> Iterator[LockedConnection]:
        """The connection row, locked and re-read, for one transaction: committed when the block ends normally,
        rolled back when it raises."""
        with self.engine.begin() as conn:
            yield LockedConnection(self, conn, self._load(conn, organization_id, realm_id, lock=True))

    def _load(
        self, conn: Connection, organization_id: int, realm_id: str | None, *, lock: bool
    ) -> ConnectionRecord:
        c = qbo_connections.c
        query = sa.select(qbo_connections).where(c.organization_id == organization_id).order_by(c.id.desc())
        if realm_id is not None:
            query = query.where(c.realm_id == realm_id)
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise LookupError(
                f"organisation {organization_id} has no QuickBooks connection: "
                f"connect it with `batchly-sync connect --org {organization_id}`"
            )
        tokens = None
        if row["access_token_enc"] and row["refresh_token_enc"]:
            tokens = StoredTokens(
                access_token=self._decrypt(row["access_token_enc"]),
                refresh_token=self._decrypt(row["refresh_token_enc"]),
                access_expires_at=row["access_token_expires_at"],
                refresh_expires_at=row["refresh_token_expires_at"],
                refresh_hard_expires_at=row["refresh_token_hard_expires_at"],
            )
        return ConnectionRecord(
            id=row["id"],
            organization_id=row["organization_id"],
            realm_id=row["realm_id"],
            environment=row["environment"],
            base_url=row["base_url"],
            status=row["status"],
            status_reason=row["status_reason"],
            token_version=row["token_version"],
            tokens=tokens,
        )

    def _token_values(self, tokens: TokenPair, *, same_grant: bool = False) -> dict[str, Any]:
        """The columns of a token pair. A refresh (``same_grant``) whose answer did not say the hard expiry keeps
        the stored one: refreshes never move it."""
        values = {
            "access_token_enc": self._encrypt(tokens.access_token),
            "refresh_token_enc": self._encrypt(tokens.refresh_token),
            "access_token_expires_at": tokens.access_expires_at,
            "refresh_token_expires_at": tokens.refresh_expires_at,
            "refresh_token_hard_expires_at": tokens.refresh_hard_expires_at,
        }
        if same_grant and tokens.refresh_hard_expires_at is None:
            del values["refresh_token_hard_expires_at"]
        return values

    def _encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def _decrypt(self, value: str) -> str:
        return self._fernet.decrypt(value.encode()).decode()


class LockedConnection:
    """A connection row held under its lock inside :meth:`ConnectionStore.locked`."""

    def __init__(self, store: ConnectionStore, conn: Connection, record: ConnectionRecord) -> None:
        self._store = store
        self._conn = conn
        self.record = record

    def replace_tokens(self, tokens: TokenPair) -> ConnectionRecord:
        """Store a rotated pair (``token_version`` bumped) and return the row as it is now."""
        self._conn.execute(
            sa.update(qbo_connections)
            .where(qbo_connections.c.id == self.record.id)
            .values(
                token_version=qbo_connections.c.token_version + 1,
                updated_at=utcnow(),
                **self._store._token_values(tokens, same_grant=True),
            )
        )
        self.record = self._store._load(
            self._conn, self.record.organization_id, self.record.realm_id, lock=False
        )
        return self.record

    def set_status(self, status: str, reason: str) -> None:
        """Mark the connection (e.g. ``needs_reauth``) with a reason an operator can act on. Marked ``connected``
        again after waiting for re-authorisation, its realm's next sweep starts from before it lost access."""
        c = qbo_connections.c
        if status == "connected":
            before = self._conn.execute(
                sa.select(c.status, c.updated_at).where(c.id == self.record.id)
            ).first()
            if before is not None and before.status != "connected":
                rewind_repair_after_reauth(self._conn, self.record.realm_id, before.updated_at)
        self._conn.execute(
            sa.update(qbo_connections)
            .where(qbo_connections.c.id == self.record.id)
            .values(status=status, status_reason=reason[:1000], updated_at=utcnow())
        )
        self.record = replace(self.record, status=status, status_reason=reason[:1000])
