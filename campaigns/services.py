"""Every write to campaigns. `events_append` is the only path into the event log."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from channels.layers import get_channel_layer
from django.db import IntegrityError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from rpgai.errors import Conflict, DomainError, NotFound, PermissionDenied
from rpgai.metrics import events_appended as metrics_events_appended
from rpgai.ratelimit import check_rate
from rpgai.request_id import new_request_id, request_id_bound
from rpgai.tasks import call_async

from . import selectors
from .dice import dice_seed_new
from .events import (
    EVENT_TYPES,
    PREMISE_MAX_CHARS,
    SAFETY_ITEM_MAX_CHARS,
    SAFETY_ITEMS_MAX,
    TONE_MAX_CHARS,
    TURN_MODES,
    ActorKind,
    FoldedEvent,
    InvalidEvent,
    NewEvent,
    copy_state,
    fold,
    fold_all,
    initial_state,
    validate_payload,
)
from .immutability import purge_window
from .models import Campaign, CampaignBan, Event, Membership, Snapshot, new_invite_code
from .signals import events_committed

log = logging.getLogger(__name__)

ACTOR_KINDS = frozenset(get_args(ActorKind))

Precondition = Callable[[dict[str, Any]], None]
EventBuilder = Callable[[dict[str, Any]], Sequence[NewEvent]]


class CampaignArchived(Conflict):
    """The campaign is archived: read-only until its GM brings it back (HTTP 409,
    WebSocket `error`, code `archived`)."""

    code = "archived"


ARCHIVED_DETAIL = (
    "This campaign is archived, so it is read-only: nothing can be played here until its "
    "GM brings it back."
)
# What an archived campaign refuses: play (actions, rolls, directions, whispers, the
# X-card), the DM's turns and their tool events, sheets and the GM's corrections. Still
# allowed: its setup's changes (un-archiving), members leaving or being removed, the dice
# seed's reveal, a failed turn's notice, and what comes after a narration (audio, summaries).
READ_ONLY_WHEN_ARCHIVED = frozenset(
    {
        "player_action",
        "gm_direction",
        "whisper",
        "x_card",
        "roll_requested",
        "roll_dc_held",
        "roll_result",
        "dm_narration",
        "dm_narration_retracted",
        "state_patch_requested",
        "state_patch_applied",
        "state_patch_rejected",
        "entity_created",
        "audio_cue",
        "character_created",
        "character_updated",
    }
)


# --- The event log ---------------------------------------------------------------------------


def events_append(
    *,
    campaign_id: uuid.UUID | str,
    events: Sequence[NewEvent] | EventBuilder,
    request_id: str = "",
    precondition: Precondition | None = None,
) -> list[Event]:
    """Append events to a campaign's log and fold them into its snapshot, atomically.

    Each event gets `seq = version + 1` under a lock on the snapshot row (PostgreSQL:
    SELECT ... FOR UPDATE; SQLite: the IMMEDIATE transaction's database lock), so seqs
    are gapless and unique across processes. An event whose payload carries a dedupe key
    already in the log (a repeated `action_id`) is not appended again; the stored one is
    returned in its place. `precondition(state)` may raise to append nothing; it must
    not change the state it is given.

    `events` may be a builder: called with a copy of the locked current state (its own:
    it may change it), it returns the events to append (the tools use this to validate
    against the state that the events will really fold into). After commit, the new
    events go to the room and to `events_committed` listeners: once per transaction
    and campaign, however many appends the transaction made in a row.

    Round trips on PostgreSQL, BEGIN and COMMIT aside: two for a list of events (the
    lock with the reads that must follow it, then the inserts with the snapshot's
    update), three for a builder that needs the archived guard or dedupe keys.
    """
    connection = transaction.get_connection()
    campaign_uuid = Campaign._meta.pk.to_python(campaign_id)
    # A list known before the lock is validated before it is taken, so that pydantic's
    # work holds no other writer up; its error is raised where the locked path raises it.
    known_early = None if callable(events) else _AppendPlan.of(events)
    with transaction.atomic():
        locked = _log_lock(connection, campaign_uuid, known_early)
        if precondition is not None:
            precondition(locked.state)
        if known_early is None:
            assert callable(events)
            plan = _AppendPlan.of(events(copy_state(locked.state)))
            _log_read_under_lock(connection, locked, plan)
        else:
            plan = known_early
        # Read under the log's lock: an archive committed a moment ago (on any process)
        # holds for every write that comes after it.
        if plan.guarded and locked.archived:
            raise CampaignArchived(ARCHIVED_DETAIL)
        if plan.invalid is not None:
            raise plan.invalid
        known: dict[str, Event] = (
            {
                e.dedupe_key: e
                for e in Event.objects.filter(
                    campaign_id=campaign_uuid, dedupe_key__in=locked.known_keys
                )
            }
            if locked.known_keys
            else {}
        )

        # The state read under the lock is this call's own (parsed from the row), so the
        # events fold into it in place: no copy.
        state = locked.state
        version = locked.version
        now = timezone.now()
        result: list[Event] = []
        appended: list[Event] = []
        for new, payload, key in plan.prepared:
            if key and key in known:
                result.append(known[key])
                continue
            version += 1
            event = Event(
                id=uuid.uuid4(),
                campaign_id=campaign_uuid,
                seq=version,
                type=new.type,
                actor_kind=new.actor_kind,
                actor_user_id=new.actor_user_id,
                payload=payload,
                visibility=dict(new.visibility),
                request_id=request_id[:64],
                dedupe_key=key,
                created_at=new.created_at or now,
            )
            fold(state, selectors.folded(event))
            appended.append(event)
            result.append(event)
            if key:
                known[key] = event
        if not appended:
            return result
        _log_write(connection, locked, appended, version, state, now)
    _tell_after_commit(connection, campaign_uuid, appended)
    return result


@dataclass
class _AppendPlan:
    """What an append will write, validated: (event, payload as stored, dedupe key)."""

    prepared: list[tuple[NewEvent, dict[str, Any], str | None]]
    keys: list[str]
    # Some event is refused while the campaign is archived.
    guarded: bool
    # The first event that did not validate; raised after the lock's own refusals.
    invalid: InvalidEvent | None

    @classmethod
    def of(cls, events: Iterable[NewEvent]) -> _AppendPlan:
        events = list(events)
        prepared: list[tuple[NewEvent, dict[str, Any], str | None]] = []
        invalid = None
        for new in events:
            try:
                prepared.append((new, *validate_payload(new.type, new.payload)))
            except InvalidEvent as exc:
                invalid = exc
                break
        return cls(
            prepared=prepared,
            keys=[key for _, _, key in prepared if key] if invalid is None else [],
            guarded=any(new.type in READ_ONLY_WHEN_ARCHIVED for new in events),
            invalid=invalid,
        )


@dataclass
class _Locked:
    """The snapshot row under the log's lock, and what was read after taking it."""

    campaign_pk: Any  # the campaign's id as the database takes it
    version: int
    state: dict[str, Any]
    archived: bool = False
    # Dedupe keys of the append already in the log.
    known_keys: Sequence[str] = ()


@dataclass(frozen=True)
class _LogSQL:
    """The append's statements for one database connection, made once per process."""

    # Several statements go in one execute, so in one round trip: psycopg 3's
    # client-side-binding cursor (Django's default on PostgreSQL) sends them with the
    # simple query protocol, each with a snapshot of its own (READ COMMITTED), and keeps
    # each one's rows (`nextset`).
    batches: bool
    lock: str
    archived: str
    dedupe: str  # {keys}: one placeholder per key
    insert: str  # {rows}: one row of placeholders per event
    insert_row: str
    update: str

    @classmethod
    def of(cls, connection: BaseDatabaseWrapper) -> _LogSQL:
        qn = connection.ops.quote_name
        event, snapshot, campaign = Event._meta, Snapshot._meta, Campaign._meta
        lock = (
            f"SELECT {qn('version')}, {qn('state')} FROM {qn(snapshot.db_table)} "
            f"WHERE {qn('campaign_id')} = %s"
        )
        # SQLite has no row lock: the IMMEDIATE transaction took the database's write
        # lock when it began, before this read.
        if connection.features.has_select_for_update:
            lock += " FOR UPDATE"
        fields = event.concrete_fields
        return cls(
            batches=(
                connection.vendor == "postgresql"
                and connection.Database.__name__ == "psycopg"
                and not connection.features.uses_server_side_binding
            ),
            lock=lock,
            archived=f"SELECT {qn('archived')} FROM {qn(campaign.db_table)} WHERE {qn('id')} = %s",
            dedupe=(
                f"SELECT {qn('dedupe_key')} FROM {qn(event.db_table)} "
                f"WHERE {qn('campaign_id')} = %s AND {qn('dedupe_key')} IN ({{keys}})"
            ),
            insert=(
                f"INSERT INTO {qn(event.db_table)} ({', '.join(qn(f.column) for f in fields)}) "
                "VALUES {rows}"
            ),
            insert_row="(" + ", ".join(["%s"] * len(fields)) + ")",
            update=(
                f"UPDATE {qn(snapshot.db_table)} SET {qn('version')} = %s, {qn('state')} = %s, "
                f"{qn('updated_at')} = %s WHERE {qn('campaign_id')} = %s"
            ),
        )


_LOG_SQL: dict[tuple[str, str], _LogSQL] = {}


def _log_sql(connection: BaseDatabaseWrapper) -> _LogSQL:
    key = (connection.alias, connection.vendor)
    sql = _LOG_SQL.get(key)
    if sql is None:
        sql = _LOG_SQL[key] = _LogSQL.of(connection)
    return sql


def _log_statements(
    connection: BaseDatabaseWrapper, statements: list[tuple[str, list[Any]]]
) -> list[list[tuple[Any, ...]]]:
    """Run the statements in order, in one round trip where the database allows it, and
    return each one's rows."""
    results: list[list[tuple[Any, ...]]] = []
    with connection.cursor() as cursor:
        if _log_sql(connection).batches:
            cursor.execute(
                "; ".join(sql for sql, _ in statements),
                [param for _, params in statements for param in params],
            )
            while True:
                results.append(cursor.fetchall() if cursor.description else [])
                if not cursor.nextset():
                    break
        else:
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall() if cursor.description else [])
    return results


def _reads_under_lock(
    connection: BaseDatabaseWrapper, campaign_pk: Any, *, archived: bool, keys: list[str]
) -> list[tuple[str, list[Any]]]:
    """The reads that must see what the lock's previous holder committed: the archived
    flag, and which dedupe keys the log holds. Each is a statement of its own after the
    lock's: in READ COMMITTED a statement sees the commits made before it started, so a
    join or subquery in the locking statement would read them as they were before the
    wait for the lock."""
    sql = _log_sql(connection)
    reads: list[tuple[str, list[Any]]] = []
    if archived:
        reads.append((sql.archived, [campaign_pk]))
    if keys:
        reads.append((sql.dedupe.format(keys=", ".join(["%s"] * len(keys))), [campaign_pk, *keys]))
    return reads


def _take_reads(locked: _Locked, archived: bool, keys: list[str], rows: list[list[Any]]) -> None:
    rows = list(rows)
    if archived:
        found = rows.pop(0)
        locked.archived = bool(found and found[0][0])
    if keys:
        locked.known_keys = [key for (key,) in rows.pop(0)]


def _log_lock(
    connection: BaseDatabaseWrapper, campaign_id: uuid.UUID, plan: _AppendPlan | None
) -> _Locked:
    """Lock the campaign's log (its snapshot row) and read the row; with the plan of a
    list of events known beforehand, also the reads that follow the lock, in the same
    round trip. NotFound for a campaign with no log."""
    archived = plan is not None and plan.guarded
    keys = plan.keys if plan is not None else []
    pk = Campaign._meta.pk.get_db_prep_value(campaign_id, connection)
    rows = _log_statements(
        connection,
        [
            (_log_sql(connection).lock, [pk]),
            *_reads_under_lock(connection, pk, archived=archived, keys=keys),
        ],
    )
    if not rows[0]:
        raise NotFound("no such campaign")
    version, raw_state = rows[0][0]
    state = Snapshot._meta.get_field("state").from_db_value(raw_state, None, connection)
    locked = _Locked(campaign_pk=pk, version=version, state=state)
    _take_reads(locked, archived, keys, rows[1:])
    return locked


def _log_read_under_lock(
    connection: BaseDatabaseWrapper, locked: _Locked, plan: _AppendPlan
) -> None:
    """The reads that follow the lock, for events a builder made under it (one round
    trip, none when the events need neither)."""
    archived, keys = plan.guarded, plan.keys
    reads = _reads_under_lock(connection, locked.campaign_pk, archived=archived, keys=keys)
    if reads:
        _take_reads(locked, archived, keys, _log_statements(connection, reads))


def _log_write(
    connection: BaseDatabaseWrapper,
    locked: _Locked,
    appended: list[Event],
    version: int,
    state: dict[str, Any],
    now: datetime,
) -> None:
    """Insert the events and update the snapshot (one round trip on PostgreSQL). Values
    go through each field's own conversion for the database, as the ORM's would."""
    sql = _log_sql(connection)
    fields = Event._meta.concrete_fields
    statements: list[tuple[str, list[Any]]] = []
    size = max(1, connection.ops.bulk_batch_size(fields, appended))
    for start in range(0, len(appended), size):
        chunk = appended[start : start + size]
        statements.append(
            (
                sql.insert.format(rows=", ".join([sql.insert_row] * len(chunk))),
                [
                    f.get_db_prep_save(getattr(e, f.attname), connection)
                    for e in chunk
                    for f in fields
                ],
            )
        )
    snapshot = Snapshot._meta
    statements.append(
        (
            sql.update,
            [
                version,
                snapshot.get_field("state").get_db_prep_save(state, connection),
                snapshot.get_field("updated_at").get_db_prep_save(now, connection),
                locked.campaign_pk,
            ],
        )
    )
    _log_statements(connection, statements)
    for event in appended:  # as `bulk_create` leaves them: saved, not to be inserted again
        event._state.adding = False
        event._state.db = connection.alias


class _CommittedEvents:
    """The events that appends in a row appended, per campaign in seq order: told once
    the transaction commits (one room broadcast and one `events_committed` per campaign).

    Appends join the batch only when nothing else was registered for the commit after
    it and under the same savepoints: Django drops a savepoint's hooks when it rolls back,
    so one hook for appends made under the same savepoints is dropped exactly when all of
    them are, and other hooks keep their order relative to the broadcasts."""

    def __init__(self) -> None:
        self.by_campaign: dict[uuid.UUID, list[Event]] = {}
        # Set once it runs. A hook can run while still in `run_on_commit`, the
        # connection in a transaction: `captureOnCommitCallbacks` runs them so inside a
        # test's transaction that never commits. What is appended then (a listener's
        # reply) needs a hook of its own: joining this one, it would never be told.
        self.running = False

    def add(self, campaign_id: uuid.UUID, events: list[Event]) -> None:
        self.by_campaign.setdefault(campaign_id, []).extend(events)

    def __call__(self) -> None:
        self.running = True
        for campaign_id, events in self.by_campaign.items():
            _after_commit(campaign_id, events)


def _tell_after_commit(
    connection: BaseDatabaseWrapper, campaign_id: uuid.UUID, appended: list[Event]
) -> None:
    # Registered after the append's own atomic block: its savepoint (when nested) was
    # released, so the hook lives and dies with the caller's transaction.
    #
    # Joining the last hook reads Django's own list of hooks. It relies on what Django
    # 5.2 does (django/db/backends/base/base.py): `on_commit` appends
    # `(set(savepoint_ids), func, robust)` to `connection.run_on_commit`, and
    # `savepoint_rollback(sid)` drops exactly the entries whose set holds `sid`. Any other
    # shape registers a hook of its own: still correct, one broadcast per append as
    # before. tests/test_append_fast.py checks the shape and that appends in a row are
    # told once, so an upgrade that changes it fails there rather than passing unseen.
    if connection.in_atomic_block and connection.run_on_commit:
        last = connection.run_on_commit[-1]
        if isinstance(last, tuple) and len(last) == 3:
            savepoints, hook, _robust = last
            if (
                isinstance(hook, _CommittedEvents)
                and not hook.running
                and savepoints == set(connection.savepoint_ids)
            ):
                hook.add(campaign_id, appended)
                return
    hook = _CommittedEvents()
    hook.add(campaign_id, appended)
    transaction.on_commit(hook, using=connection.alias)


def _after_commit(campaign_id: uuid.UUID, events: list[Event]) -> None:
    # The database is the record: a failed broadcast only delays delivery (clients
    # fill gaps from the database), so it must never fail the caller.
    metrics_events_appended(events)
    try:
        broadcast_events(campaign_id, events)
    except Exception:
        log.exception("broadcast of %d events to campaign %s failed", len(events), campaign_id)
    events_committed.send(sender=Event, campaign_id=campaign_id, events=events)


def broadcast_events(campaign_id: uuid.UUID | str, events: list[Event]) -> None:
    """Tell the room's consumers about committed events (at most once; they fill gaps)."""
    layer = get_channel_layer()
    if layer is None or not events:
        return
    call_async(
        layer.group_send,
        selectors.group_name(campaign_id),
        {
            "type": "campaign.events",
            "events": [selectors.event_envelope(e) for e in events],
        },
    )


def broadcast_room(campaign_id: uuid.UUID | str, message: dict[str, Any]) -> None:
    """Send an ephemeral message (presence, narration deltas) to a campaign's room."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        call_async(layer.group_send, selectors.group_name(campaign_id), message)
    except Exception:
        log.exception("room message to campaign %s failed", campaign_id)


async def abroadcast_room(campaign_id: uuid.UUID | str, message: dict[str, Any]) -> None:
    """`broadcast_room` from a coroutine (a turn streaming its narration)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(selectors.group_name(campaign_id), message)
    except Exception:
        log.exception("room message to campaign %s failed", campaign_id)


# --- Campaigns and members -------------------------------------------------------------------


def _character_for(display_name: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "name": display_name}


class SetupInvalid(DomainError):
    code = "invalid_setup"


def _setup_text(field: str, value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SetupInvalid(f"{field} must be text")
    value = value.strip()
    if len(value) > limit:
        raise SetupInvalid(f"{field} is at most {limit} characters; this one has {len(value)}")
    from .whispers import text_problem  # whispers imports this module

    problem = text_problem(value)
    if problem is not None:
        raise SetupInvalid(f"{field}: {problem}")
    return value


def _setup_list(field: str, value: Any) -> list[str]:
    """A list of short strings (lines or veils): each stripped, blanks and repeats dropped."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise SetupInvalid(f"{field} must be a list of short texts")
    items: list[str] = []
    for number, item in enumerate(value, start=1):
        if not isinstance(item, str):
            raise SetupInvalid(f"{field}: item {number} must be text")
        text = _setup_text(f"{field}: item {number}", item, SAFETY_ITEM_MAX_CHARS)
        if text and text not in items:
            items.append(text)
    if len(items) > SAFETY_ITEMS_MAX:
        raise SetupInvalid(f"{field} holds at most {SAFETY_ITEMS_MAX} items; this has {len(items)}")
    return items


def campaign_setup_clean(
    *,
    premise: Any = "",
    tone: Any = "",
    turn_mode: Any = "free",
    lines: Any = (),
    veils: Any = (),
) -> dict[str, Any]:
    """The setup of CONTRACTS §7 as it is stored, or SetupInvalid saying what is wrong in
    plain words: premise (at most 2000 characters), tone (200), turn mode (`free` or
    `rounds`), lines and veils (at most 20 items of 200 characters each)."""
    if turn_mode not in TURN_MODES:
        raise SetupInvalid(f"turn_mode is one of {', '.join(TURN_MODES)}")
    return {
        "premise": _setup_text("premise", premise, PREMISE_MAX_CHARS),
        "tone": _setup_text("tone", tone, TONE_MAX_CHARS),
        "turn_mode": turn_mode,
        "lines": _setup_list("lines", lines),
        "veils": _setup_list("veils", veils),
    }


def _name_clean(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise SetupInvalid("a campaign needs a name")
    return _setup_text("name", name, 120)


def campaign_create(
    *,
    name: str,
    edition: str = "5e",
    creator: Any,
    display_name: str | None = None,
    scene: dict[str, str] | None = None,
    premise: str = "",
    tone: str = "",
    turn_mode: str = "free",
    lines: Sequence[str] = (),
    veils: Sequence[str] = (),
    opening: bool = False,
    request_id: str = "",
) -> Campaign:
    """A new campaign whose creator is its GM; its log opens with `campaign_created`,
    which carries the setup (premise, tone, turn mode, lines and veils: CONTRACTS §7).

    With `opening` the DM owes the table an opening scene: the fold of `campaign_created`
    makes a turn owed (as an action does), and the orchestrator narrates it once, right
    after the commit (the API, the create page and the demo ask for it)."""
    name = _name_clean(name)
    edition = (edition or "5e").strip()
    setup = campaign_setup_clean(
        premise=premise, tone=tone, turn_mode=turn_mode, lines=lines, veils=veils
    )
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name, edition=edition, created_by=creator, turn_mode=setup["turn_mode"]
        )
        Snapshot.objects.create(campaign=campaign, version=0, state=initial_state())
        gm_name = (display_name or creator.get_username())[:60]
        Membership.objects.create(
            campaign=campaign, user=creator, role=Membership.Role.GM, display_name=gm_name
        )
        created: dict[str, Any] = {"name": name, "edition": edition, **setup}
        if scene:
            created["scene"] = scene
        if opening:
            created["opening"] = True
        # The dice commitment comes with the campaign, before any roll can exist.
        _, seed_committed = dice_seed_new(campaign_id=campaign.id)
        events_append(
            campaign_id=campaign.id,
            request_id=request_id,
            events=[
                NewEvent("campaign_created", created, "gm", creator.id),
                seed_committed,
                NewEvent(
                    "player_joined",
                    {"user_id": str(creator.id), "display_name": gm_name, "role": "gm"},
                    "gm",
                    creator.id,
                ),
            ],
        )
    return campaign


# What PATCH /api/campaigns/<id>/ may change (turn mode stays with PUT .../turns).
CAMPAIGN_UPDATABLE = ("name", "premise", "tone", "lines", "veils", "archived")


def campaign_update(
    *,
    campaign_id: uuid.UUID | str,
    by_user: Any,
    changes: dict[str, Any],
    request_id: str = "",
) -> tuple[Campaign, Event | None]:
    """A GM changes the campaign's setup or archives it (CONTRACTS §7): one
    `campaign_updated` {changes} with only what really changed (None when nothing did).
    `archived` is stored on the campaign's row in the same transaction, under the log's
    lock: every write after it sees it. PermissionDenied for anyone but a GM."""
    if not isinstance(changes, dict) or not changes:
        raise SetupInvalid(f"send at least one of {', '.join(CAMPAIGN_UPDATABLE)} to change")
    unknown = [key for key in changes if key not in CAMPAIGN_UPDATABLE]
    if unknown:
        hint = " (the turn mode is set with PUT .../turns)" if "turn_mode" in unknown else ""
        raise SetupInvalid(
            f"{', '.join(map(str, unknown))} cannot be changed here; "
            f"change {', '.join(CAMPAIGN_UPDATABLE)}{hint}"
        )
    wanted: dict[str, Any] = {}
    if "name" in changes:
        wanted["name"] = _name_clean(changes["name"])
    for key, limit in (("premise", PREMISE_MAX_CHARS), ("tone", TONE_MAX_CHARS)):
        if key in changes:
            wanted[key] = _setup_text(key, changes[key], limit)
    for key in ("lines", "veils"):
        if key in changes:
            wanted[key] = _setup_list(key, changes[key])
    if "archived" in changes:
        if not isinstance(changes["archived"], bool):
            raise SetupInvalid("archived is true or false")
        wanted["archived"] = changes["archived"]
    user_id = getattr(by_user, "id", None)

    def build(state: dict[str, Any]) -> list[NewEvent]:
        membership = (
            selectors.membership_get(campaign_id=campaign_id, user_id=user_id) if user_id else None
        )
        if membership is None or not membership.is_gm:
            raise PermissionDenied("only the campaign's GM may change its setup", code="gm_only")
        # A campaign made before the setup existed has none of its keys: they count as
        # empty. `archived` is the row's (read under the lock, like every writer's).
        current = {"premise": "", "tone": "", "lines": [], "veils": []}
        current.update(state.get("campaign") or {})
        current["archived"] = membership.campaign.archived
        changed = {key: value for key, value in wanted.items() if current.get(key) != value}
        if not changed:
            return []
        return [NewEvent("campaign_updated", {"changes": changed}, "gm", user_id)]

    with transaction.atomic():
        appended = events_append(campaign_id=campaign_id, request_id=request_id, events=build)
        campaign = Campaign.objects.get(id=campaign_id)
        event = appended[0] if appended else None
        if event is not None:
            row = {
                key: event.payload["changes"][key]
                for key in ("name", "archived")
                if key in event.payload["changes"]
            }
            if row:
                Campaign.objects.filter(id=campaign_id).update(**row)
                campaign.refresh_from_db()
    return campaign, event


# The X-card may be tapped again soon (the DM may not have steered far enough), never
# flooded: a fixed window per campaign, never per user (who tapped it is not recorded,
# not even as a rate-limit key).
X_CARD_RATE = "3/m"


def x_card_tap(*, membership: Membership) -> Event:
    """Someone at the table taps the X-card (CONTRACTS §7): `x_card` with actor
    `{"kind": "system"}` and an empty payload, and a turn that steers the story away from
    the current scene (its fold makes a turn owed). Who tapped it is stored nowhere: not
    in the event (not even its request id, which is a new one, not the caller's), not in
    a rate-limit key, not in the turn's logs (their request id is that new one too).
    RateLimited (429) past X_CARD_RATE taps a campaign; CampaignArchived when archived."""
    campaign_id = membership.campaign_id
    check_rate(
        None, group="x_card", key=lambda group, request: f"campaign:{campaign_id}", rate=X_CARD_RATE
    )
    request_id = "x_card-" + new_request_id()
    # The turn asked for after the commit takes this id with it, not the caller's.
    with request_id_bound(request_id):
        [event] = events_append(
            campaign_id=campaign_id,
            request_id=request_id,
            precondition=still_a_member(campaign_id=campaign_id, user_id=membership.user_id),
            events=[NewEvent("x_card", {}, "system", None)],
        )
    return event


def campaign_join(
    *,
    invite_code: str,
    user: Any,
    display_name: str | None = None,
    campaign_id: uuid.UUID | str | None = None,
    request_id: str = "",
) -> Membership:
    """Join the campaign with this invite code as a player, with a new character."""
    # A banned user is told so whatever code they send (CONTRACTS §7 "GM controls"):
    # a kick is not undone by pasting the invite link again.
    if campaign_id is not None:
        _refuse_if_banned(campaign_id=campaign_id, user_id=user.id)
    code = (invite_code or "").strip().upper()
    campaign = Campaign.objects.filter(invite_code=code).first() if code else None
    if campaign is None or (campaign_id is not None and str(campaign.id) != str(campaign_id)):
        raise PermissionDenied("that invite code does not open this campaign", code="bad_invite")
    name = (display_name or user.get_username()).strip()[:60] or user.get_username()[:60]
    with transaction.atomic():
        existing = Membership.objects.filter(campaign=campaign, user=user).first()
        if existing is not None:
            return existing
        # Again inside the transaction: a kick committed since the first look wins.
        _refuse_if_banned(campaign_id=campaign.id, user_id=user.id)
        membership = Membership.objects.create(
            campaign=campaign, user=user, role=Membership.Role.PLAYER, display_name=name
        )

        def joining(state: dict[str, Any]) -> list[NewEvent]:
            payload: dict[str, Any] = {
                "user_id": str(user.id),
                "display_name": name,
                "role": "player",
            }
            # Someone coming back (a ban lifted, or they left) gets their own character
            # back in the party; a newcomer gets a placeholder to fill in.
            returning = _departed_character_of(state, user.id)
            if returning is not None:
                payload["character_id"] = returning
            else:
                payload["character"] = _character_for(name)
            return [NewEvent("player_joined", payload, "player", user.id)]

        events_append(campaign_id=campaign.id, request_id=request_id, events=joining)
    return membership


def _departed_character_of(state: dict[str, Any], user_id: Any) -> str | None:
    """The character this user had here before they left or were kicked, if any."""
    for character_id, character in (state.get("characters") or {}).items():
        if (
            isinstance(character, dict)
            and character.get("owner_user_id") == str(user_id)
            and character.get("departed") is True
        ):
            return str(character_id)
    return None


def party_characters_of(state: dict[str, Any], user_id: Any) -> list[str]:
    """The ids of the characters this user owns that are still in the party: what a
    `player_left` lists in `departed_character_ids` (the party shows them no more)."""
    return [
        str(character_id)
        for character_id, character in (state.get("characters") or {}).items()
        if isinstance(character, dict)
        and character.get("owner_user_id") == str(user_id)
        and character.get("departed") is not True
    ]


class SoleGm(Conflict):
    """The only GM of a campaign cannot leave it (HTTP 409, code `sole_gm`)."""

    code = "sole_gm"


SOLE_GM_LEAVING = (
    "You are the only game master of this campaign, so you cannot leave it yet. Hand the "
    "GM role to another member first, then leave."
)


def membership_leave(
    *, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str, request_id: str = ""
) -> None:
    """A member leaves (or is removed): `player_left`, whose `departed_character_ids` take
    their characters out of the party (they stay in the story); their sockets close.
    NotFound if not a member; SoleGm (409) for the only GM of the campaign, checked under
    the log's lock (two GMs leaving at once cannot leave it without one)."""
    with transaction.atomic():

        def leaving(state: dict[str, Any]) -> list[NewEvent]:
            # Read under the log's lock: a role handed or a kick committed a moment ago holds.
            membership = Membership.objects.filter(campaign_id=campaign_id, user_id=user_id).first()
            if membership is None:
                raise NotFound("not a member of this campaign")
            if (
                membership.is_gm
                and not Membership.objects.filter(campaign_id=campaign_id, role=Membership.Role.GM)
                .exclude(id=membership.id)
                .exists()
            ):
                raise SoleGm(SOLE_GM_LEAVING)
            return [
                NewEvent(
                    "player_left",
                    {
                        "user_id": str(user_id),
                        "display_name": membership.display_name,
                        "role": membership.role,
                        "departed_character_ids": party_characters_of(state, user_id),
                    },
                    "gm" if membership.is_gm else "player",
                    uuid.UUID(str(user_id)),
                )
            ]

        events_append(campaign_id=campaign_id, request_id=request_id, events=leaving)
        Membership.objects.filter(campaign_id=campaign_id, user_id=user_id).delete()


def _refuse_if_banned(*, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str) -> None:
    if CampaignBan.objects.filter(campaign_id=campaign_id, user_id=user_id).exists():
        raise PermissionDenied("you were removed from this campaign by its GM", code="banned")


def member_kick(
    *, campaign_id: uuid.UUID | str, user_id: uuid.UUID, by_user: Any, request_id: str = ""
) -> CampaignBan:
    """The GM removes a member, who is banned: their sockets close (they see their own
    `player_left`) and `campaign_join` refuses them until `ban_lift`. The caller checks
    that `by_user` is a GM of the campaign."""
    with transaction.atomic():
        membership = Membership.objects.filter(campaign_id=campaign_id, user_id=user_id).first()
        if membership is None:
            raise NotFound("no such member in this campaign")
        display_name = membership.display_name
        membership_leave(campaign_id=campaign_id, user_id=user_id, request_id=request_id)
        ban, _ = CampaignBan.objects.update_or_create(
            campaign_id=campaign_id,
            user_id=user_id,
            defaults={"display_name": display_name, "banned_by_id": getattr(by_user, "id", None)},
        )
    return ban


def ban_lift(*, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str) -> None:
    """The GM lets a banned user join again (with the current invite code)."""
    deleted, _ = CampaignBan.objects.filter(campaign_id=campaign_id, user_id=user_id).delete()
    if not deleted:
        raise NotFound("no such ban in this campaign")


def bans_copy(*, from_campaign_id: uuid.UUID | str, to_campaign_id: uuid.UUID | str) -> int:
    """A fork keeps its original's bans (CONTRACTS §7): kicked players stay out of the
    copy too. Returns how many were copied."""
    copies = [
        CampaignBan(
            campaign_id=to_campaign_id,
            user_id=ban.user_id,
            display_name=ban.display_name,
            banned_by_id=ban.banned_by_id,
        )
        for ban in CampaignBan.objects.filter(campaign_id=from_campaign_id)
    ]
    CampaignBan.objects.bulk_create(copies, ignore_conflicts=True)
    return len(copies)


def invite_code_rotate(*, campaign_id: uuid.UUID | str) -> str:
    """A new invite code for the campaign; the old one stops opening it at once."""
    for _ in range(5):
        code = new_invite_code()
        try:
            with transaction.atomic():
                updated = Campaign.objects.filter(id=campaign_id).update(invite_code=code)
        except IntegrityError:
            continue  # another campaign holds that code (1 in 32**10): draw again
        if not updated:
            raise NotFound("no such campaign")
        return code
    raise Conflict("no free invite code was found; try again")


# --- GM controls: the DM resumes after a budget stop; the GM role changes hands ----------------


def turn_reopen(
    *,
    campaign_id: uuid.UUID | str,
    turn_id: str | None = None,
    request_id: str = "",
) -> Event | None:
    """The DM stopped for budget and the budget now has room (billing decides that and
    calls this): append `turn_reopened` {from_seq, turn_id, through_seq}, whose fold makes
    every action since the last narration unanswered again; its commit asks for the turn
    that answers them (orchestrator.receivers).

    Checked again under the log's lock, so it happens once: None when the table is not
    stopped for budget any more (already reopened, answered since, or another stop than
    `turn_id`, when given). Two budget raises at once, or one sent twice, reopen once."""

    def reopening(state: dict[str, Any]) -> list[NewEvent]:
        stop = selectors.budget_stop_get(campaign_id=campaign_id)
        if stop is None or (turn_id is not None and stop.turn_id != str(turn_id)):
            return []
        answered = (state.get("turn") or {}).get("answered_through_seq", 0)
        if stop.answered_before >= answered:
            return []  # nothing the stop had answered is left to reopen
        payload: dict[str, Any] = {
            "from_seq": stop.answered_before + 1,
            "through_seq": stop.through_seq,
        }
        if stop.turn_id:
            payload["turn_id"] = stop.turn_id
        return [NewEvent("turn_reopened", payload, "system")]

    made = events_append(campaign_id=campaign_id, events=reopening, request_id=request_id)
    return made[0] if made else None


class GmRoleRefused(Conflict):
    code = "gm_role_refused"


def gm_role_hand(
    *,
    campaign_id: uuid.UUID | str,
    by_user: Any,
    to_user_id: uuid.UUID | str,
    request_id: str = "",
) -> Event:
    """A GM hands the GM role to another member (CONTRACTS §7 "GM controls"): the target
    becomes a GM and the caller a player, in one transaction with the event
    `gm_role_handed` {from_user_id, to_user_id} (which the room's sockets of both follow).

    Checked under the log's lock: PermissionDenied unless the caller is a GM now;
    NotFound when the target is not a member (a kicked, banned or departed user is not);
    GmRoleRefused (409) for the caller themself or a member who is a GM already."""
    by_user_id = str(getattr(by_user, "id", "") or "")
    try:
        target_id = str(uuid.UUID(str(to_user_id)))
    except ValueError:
        raise DomainError("`to` is the user id of a member of this campaign") from None

    def handing(state: dict[str, Any]) -> list[NewEvent]:
        giver = Membership.objects.filter(campaign_id=campaign_id, user_id=by_user_id).first()
        if giver is None or not giver.is_gm:
            raise PermissionDenied("only the campaign's GM may hand the GM role", code="gm_only")
        if target_id == by_user_id:
            raise GmRoleRefused("You are the game master already; choose another member.")
        if CampaignBan.objects.filter(campaign_id=campaign_id, user_id=target_id).exists():
            raise NotFound("That person is not at this table: they were removed from it.")
        taker = Membership.objects.filter(campaign_id=campaign_id, user_id=target_id).first()
        if taker is None:
            raise NotFound("That person is not a member of this campaign.")
        if taker.is_gm:
            raise GmRoleRefused(f"{taker.display_name} is a game master of this campaign already.")
        return [
            NewEvent(
                "gm_role_handed",
                {"from_user_id": by_user_id, "to_user_id": target_id},
                "gm",
                uuid.UUID(by_user_id),
            )
        ]

    with transaction.atomic():
        [event] = events_append(campaign_id=campaign_id, events=handing, request_id=request_id)
        Membership.objects.filter(campaign_id=campaign_id, user_id=target_id).update(
            role=Membership.Role.GM
        )
        Membership.objects.filter(campaign_id=campaign_id, user_id=by_user_id).update(
            role=Membership.Role.PLAYER
        )
    return event


def still_a_member(*, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str) -> Precondition:
    """A precondition for `events_append`: the member's write is refused if they are no
    longer a member. Checked under the log's lock, so a member removed a moment ago (on
    any process, whose socket may not have closed yet) cannot act, whisper or roll any
    more: a kick commits its `player_left` under the same lock."""

    def check(state: dict[str, Any]) -> None:
        if not selectors.member_exists(campaign_id=campaign_id, user_id=user_id):
            raise PermissionDenied("you are no longer a member of this campaign")

    return check


def player_action_submit(
    *,
    membership: Membership,
    action_id: uuid.UUID | str,
    text: str,
    character_id: uuid.UUID | str | None = None,
    request_id: str = "",
) -> Event:
    """A member's action; a repeated `action_id` returns the event already stored."""
    text = text.strip()
    if not text:
        raise InvalidEvent("text must not be empty")
    if "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text):
        # PostgreSQL cannot store NUL in text, and a lone surrogate is not UTF-8.
        raise InvalidEvent("text must not contain NUL or unpaired surrogate characters")
    if character_id is None:
        character_id = _own_character_id(membership)
    payload: dict[str, Any] = {"action_id": str(action_id), "text": text}
    if character_id is not None:
        payload["character_id"] = str(character_id)

    [event] = events_append(
        campaign_id=membership.campaign_id,
        request_id=request_id,
        precondition=still_a_member(campaign_id=membership.campaign_id, user_id=membership.user_id),
        events=[
            NewEvent(
                "player_action",
                payload,
                "gm" if membership.is_gm else "player",
                membership.user_id,
            )
        ],
    )
    return event


GM_DIRECTION_MAX_CHARS = 2000


def still_a_gm(*, campaign_id: uuid.UUID | str, user_id: uuid.UUID | str) -> Precondition:
    """Like `still_a_member`, for what only a GM may write: checked under the log's lock."""

    def check(state: dict[str, Any]) -> None:
        membership = selectors.membership_get(campaign_id=campaign_id, user_id=user_id)
        if membership is None or not membership.is_gm:
            raise PermissionDenied("only the campaign's GM may direct the DM")

    return check


def gm_direction_give(
    *,
    membership: Membership,
    text: str,
    secret: bool = False,
    now: bool = True,
    request_id: str = "",
) -> Event:
    """A GM's direction to the DM (CONTRACTS §7): event `gm_direction` {text, now}, actor
    the GM, visible to the GMs only when `secret`, else to all. It is not a character's
    action: no `player_action`. With `now` its fold makes a turn owed (the orchestrator
    then narrates it); either way the DM reads it from the log into the next turn's
    prompt. PermissionDenied for a member who is not a GM."""
    if not membership.is_gm:
        raise PermissionDenied("only the campaign's GM may direct the DM")
    if not isinstance(text, str) or not text.strip():
        raise DomainError("write what the DM should know or do", code="invalid_direction")
    text = text.strip()
    if len(text) > GM_DIRECTION_MAX_CHARS:
        raise DomainError(
            f"a direction is at most {GM_DIRECTION_MAX_CHARS} characters; this one has {len(text)}",
            code="invalid_direction",
        )
    from .whispers import text_problem  # whispers imports this module

    problem = text_problem(text)
    if problem is not None:
        raise DomainError(f"a direction's {problem}", code="invalid_direction")
    [event] = events_append(
        campaign_id=membership.campaign_id,
        request_id=request_id,
        precondition=still_a_gm(campaign_id=membership.campaign_id, user_id=membership.user_id),
        events=[
            NewEvent(
                "gm_direction",
                {"text": text, "now": bool(now)},
                "gm",
                membership.user_id,
                {"kind": "gm"} if secret else {"kind": "all"},
            )
        ],
    )
    return event


def _own_character_id(membership: Membership) -> str | None:
    snapshot = selectors.snapshot_get(campaign_id=membership.campaign_id)
    if snapshot is None:
        return None
    for character_id, character in snapshot.state.get("characters", {}).items():
        if character.get("owner_user_id") == str(membership.user_id):
            return character_id
    return None


def campaign_delete(*, campaign_id: uuid.UUID | str) -> None:
    """Delete a campaign with its whole log: the one sanctioned removal of events."""
    with transaction.atomic(), purge_window():
        deleted, _ = Campaign.objects.filter(id=campaign_id).delete()
    if not deleted:
        raise NotFound("no such campaign")


# --- Snapshots -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotDrift:
    campaign_id: uuid.UUID
    stored_version: int
    folded_version: int
    differing_keys: list[str]
    fixed: bool


def snapshots_rebuild(
    *, campaign_id: uuid.UUID | str | None = None, fix: bool = True
) -> tuple[int, list[SnapshotDrift]]:
    """Re-fold every event of each campaign; report (and, with `fix`, repair) any drift."""
    ids = [campaign_id] if campaign_id else list(Campaign.objects.values_list("id", flat=True))
    drifts: list[SnapshotDrift] = []
    for cid in ids:
        with transaction.atomic():
            snapshot = Snapshot.objects.select_for_update().filter(campaign_id=cid).first()
            if snapshot is None:
                raise NotFound(f"no campaign {cid}")
            events = Event.objects.filter(campaign_id=cid).order_by("seq")
            state = fold_all([selectors.folded(e) for e in events.iterator(chunk_size=2000)])
            version = events.last().seq if events.exists() else 0
            if state == snapshot.state and version == snapshot.version:
                continue
            keys = sorted(
                k for k in set(state) | set(snapshot.state) if state.get(k) != snapshot.state.get(k)
            )
            stored_version = snapshot.version  # read before the fix overwrites it
            if fix:
                snapshot.state = state
                snapshot.version = version
                snapshot.save(update_fields=["state", "version", "updated_at"])
            drifts.append(SnapshotDrift(snapshot.campaign_id, stored_version, version, keys, fix))
    return len(ids), drifts


# --- Export and import ------------------------------------------------------------------------


def campaign_export(*, campaign_id: uuid.UUID | str) -> Iterator[str]:
    """The campaign's log as JSON Lines of event envelopes, in seq order."""
    if selectors.campaign_get(campaign_id=campaign_id) is None:
        raise NotFound("no such campaign")
    events = Event.objects.filter(campaign_id=campaign_id).order_by("seq")
    # The names of deleted accounts are withheld here too (docs/security.md).
    withheld = selectors.names_withheld(campaign_id=campaign_id)
    for event in events.iterator(chunk_size=2000):
        envelope = selectors.envelope_withheld(selectors.event_envelope(event), withheld)
        yield json.dumps(envelope, ensure_ascii=False, sort_keys=True)


class ImportError_(DomainError):
    code = "invalid_import"


def campaign_import(*, lines: Iterable[str], owner: Any, batch_size: int = 500) -> Campaign:
    """A new campaign from exported JSON Lines: the same events, new ids, seq from 1.

    Members are re-created for the users of `player_joined` events that exist on this
    server; `owner` becomes a GM of the copy in any case.
    """
    envelopes: list[dict[str, Any]] = []
    dedupe_keys: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            envelope, key = _import_envelope(line)
        except (ValueError, TypeError, InvalidEvent) as exc:
            raise ImportError_(f"line {number}: {exc}") from exc
        if key:
            # events_append would silently skip the repeat and shift every later seq.
            if key in dedupe_keys:
                raise ImportError_(f"line {number}: repeats {key}")
            dedupe_keys.add(key)
        if envelope["seq"] != len(envelopes) + 1:
            raise ImportError_(
                f"line {number}: seq {envelope['seq']} where {len(envelopes) + 1} was expected "
                "(an export is numbered 1..N without gaps)"
            )
        envelopes.append(envelope)
    if not envelopes or envelopes[0]["type"] != "campaign_created":
        raise ImportError_("an export starts with its campaign_created event")

    created = envelopes[0]["payload"]
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=str(created.get("name", "Imported"))[:120],
            edition=str(created.get("edition", "5e"))[:40],
            created_by=owner,
        )
        Snapshot.objects.create(campaign=campaign, version=0, state=initial_state())
        for start in range(0, len(envelopes), batch_size):
            chunk = envelopes[start : start + batch_size]
            events_append(
                campaign_id=campaign.id,
                events=[
                    NewEvent(
                        type=e["type"],
                        payload=e["payload"],
                        actor_kind=e.get("actor", {}).get("kind", "system"),
                        actor_user_id=_uuid_or_none(e.get("actor", {}).get("user_id")),
                        visibility=e.get("visibility") or {"kind": "all"},
                        created_at=e["created_at"],
                    )
                    for e in chunk
                ],
                request_id="import",
            )
        # The copy rolls with a secret of its own, never the original's (which this
        # server may not even hold): a fresh commitment replaces the imported one.
        _, seed_committed = dice_seed_new(campaign_id=campaign.id)
        events_append(campaign_id=campaign.id, events=[seed_committed], request_id="import")
        _memberships_from_state(campaign, owner)
    return campaign


def _import_envelope(line: str) -> tuple[dict[str, Any], str | None]:
    """One exported line, checked as `events_append` would, so errors can name the line."""
    try:
        envelope = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("seq", "type", "payload", "created_at") if k not in envelope]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if not isinstance(envelope["seq"], int) or isinstance(envelope["seq"], bool):
        raise ValueError(f"seq {envelope['seq']!r} is not an integer")
    if envelope["type"] not in EVENT_TYPES:
        raise ValueError(f"unknown event type {envelope['type']!r}")
    if not isinstance(envelope["payload"], dict):
        raise ValueError("payload is not a JSON object")
    _, dedupe_key = validate_payload(envelope["type"], envelope["payload"])
    actor = envelope.get("actor") or {}
    if not isinstance(actor, dict) or actor.get("kind", "system") not in ACTOR_KINDS:
        raise ValueError(f"bad actor {actor!r}")
    visibility = envelope.get("visibility") or {"kind": "all"}
    if not isinstance(visibility, dict) or visibility.get("kind") not in ("all", "gm", "users"):
        raise ValueError(f"bad visibility {visibility!r}")
    if visibility["kind"] == "users" and not (
        isinstance(visibility.get("user_ids"), list)
        and all(isinstance(u, str) for u in visibility["user_ids"])
    ):
        raise ValueError("visibility of kind users needs a list of user_ids")
    created_at = datetime.fromisoformat(str(envelope["created_at"]))
    if created_at.tzinfo is None:  # the contract's times are UTC
        created_at = created_at.replace(tzinfo=UTC)
    envelope["created_at"] = created_at
    envelope["actor"], envelope["visibility"] = actor, visibility
    return envelope, dedupe_key


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _memberships_from_state(campaign: Campaign, owner: Any) -> None:
    from django.contrib.auth import get_user_model

    members = Snapshot.objects.get(campaign=campaign).state.get("members", {})
    users = get_user_model().objects.in_bulk([_uuid_or_none(uid) for uid in members])
    for user_id, member in members.items():
        user = users.get(_uuid_or_none(user_id))
        if user is not None:
            Membership.objects.get_or_create(
                campaign=campaign,
                user=user,
                defaults={"role": member["role"], "display_name": member["display_name"]},
            )
    Membership.objects.update_or_create(
        campaign=campaign,
        user=owner,
        defaults={"role": Membership.Role.GM, "display_name": owner.get_username()[:60]},
    )


def fold_events(events: Iterable[Event]) -> dict[str, Any]:
    """The state these events fold to (for tests and tools that compare)."""
    return fold_all([selectors.folded(e) for e in events])


__all__ = [
    "FoldedEvent",
    "NewEvent",
    "ban_lift",
    "bans_copy",
    "broadcast_events",
    "broadcast_room",
    "campaign_create",
    "campaign_delete",
    "campaign_export",
    "campaign_import",
    "campaign_join",
    "campaign_setup_clean",
    "campaign_update",
    "events_append",
    "fold_events",
    "gm_direction_give",
    "gm_role_hand",
    "invite_code_rotate",
    "member_kick",
    "membership_leave",
    "party_characters_of",
    "player_action_submit",
    "snapshots_rebuild",
    "still_a_member",
    "turn_reopen",
    "x_card_tap",
]
