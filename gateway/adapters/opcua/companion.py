"""Find OPC UA companion-specification objects on a server and map them to our signals.

A machine that implements OPC 40001-1 (Machinery) or OPC 40501-1 (Machine Tools) already says,
in standard types, what its state and its counters are; reading them needs no hand mapping.
:func:`discover` walks the address space below ``Objects`` (breadth first, one batched Browse
per level, at most 6 levels and ``max_nodes`` nodes), recognises objects by their type
definition (the standard types and their subtypes, looked up by namespace URI, never by
index) and proposes one node per signal per machine:

============  =====================================================================  =========
signal        node                                                                   spec
============  =====================================================================  =========
state         ``MachineryItemState/CurrentState`` (MachineryItemState_StateMachine   40001-1
              Type), LocalizedText mapped by its text
program       ``Production/ActiveProgram/Name`` (ProductionActiveProgramType)        40501-1
part_count    ``PartsProducedInLifetime`` (ProductionStatisticsType or Machinery     40501-1
              OperationCounters), else a job's ``PartsCompleted``, else its
              ``RunsCompleted``
good_count    a job's ``PartsGood`` (ProductionJobType)                              40501-1
============  =====================================================================  =========

Limits, said once here and in the generated config's comments:

- there is no scrap counter in either specification (40501-1 1.02 has ``PartsCompleted``
  and ``PartsGood`` on a job, nothing for bad parts), so ``scrap_count`` is never proposed;
  the gateway tells good from scrap by the good counter alone;
- ``NotExecuting`` covers idle and set-up alike (the set-up is in MachineryOperationMode,
  another node): it maps to ``idle``;
- job counters restart with every job, and a controller that lists one object per job
  changes node ids with each job: the proposal binds the job that is running (else the
  first) at discovery time; ``companion: auto`` rediscovers at every connection;
- a ``RunsCompleted`` counts runs, a part count only when a run makes one part;
- the walk stops at 6 levels below Objects and ``max_nodes`` nodes: a deeper or bigger
  address space may hide objects (give the nodes by hand then).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaStatusCodeError

from .batched import browse_children, nsu_node_id

log = logging.getLogger(__name__)

MACHINERY_URI: Final = "http://opcfoundation.org/UA/Machinery/"
MACHINE_TOOL_URI: Final = "http://opcfoundation.org/UA/MachineTool/"
MAX_DEPTH: Final = 6
_MAX_JOBS: Final = 50  # jobs whose state is read (one request each) to find the running one
_MAX_SUBTYPES: Final = 200  # per standard type: subtype trees are small; a bound all the same

# Standard type NodeIds (numeric, in the spec's namespace), from the published NodeSet2 files
# (OPCFoundation/UA-Nodeset: Machinery 1.04.1, MachineTool 1.02.0).
MACHINES_FOLDER: Final = (MACHINERY_URI, 1001)
ITEM_STATE_TYPE: Final = (MACHINERY_URI, 1002)  # MachineryItemState_StateMachineType
OPERATION_COUNTER_TYPE: Final = (MACHINERY_URI, 1009)  # MachineryOperationCounterType
MACHINE_TOOL_TYPE: Final = (MACHINE_TOOL_URI, 13)
STATISTICS_TYPE: Final = (MACHINE_TOOL_URI, 20)  # ProductionStatisticsType
JOB_TYPE: Final = (MACHINE_TOOL_URI, 29)  # ProductionJobType
ACTIVE_PROGRAM_TYPE: Final = (MACHINE_TOOL_URI, 32)  # ProductionActiveProgramType

ITEM_STATE_MAP: Final[dict[int | str, str]] = {
    "Executing": "running",
    "NotExecuting": "idle",
    "OutOfService": "fault",
    "NotAvailable": "off",
}

SPEC_STATE: Final = "OPC 40001-1 MachineryItemState"
SPEC_PROGRAM: Final = "OPC 40501-1 ProductionActiveProgram Name"
SPEC_LIFETIME: Final = "OPC 40501-1 PartsProducedInLifetime (never reset)"
SPEC_PARTS: Final = "OPC 40501-1 ProductionJob PartsCompleted (reset per job)"
SPEC_RUNS: Final = "OPC 40501-1 ProductionJob RunsCompleted (runs, reset per job)"
SPEC_GOOD: Final = "OPC 40501-1 ProductionJob PartsGood (reset per job)"


@dataclass(frozen=True, slots=True)
class CompanionNode:
    """One proposed mapping: a companion-spec variable read as one of our signals."""

    node: str  # "nsu=<namespace URI>;i=…" or ";s=…" — never ns=<index>
    signal: str  # state | part_count | good_count | program
    value_map: dict[int | str, str] | None  # e.g. {"Executing": "running", ...}
    spec: str  # "OPC 40001-1 MachineryItemState" etc., for comments in generated config
    browse_path: str  # "Objects/Machines/Mill/MachineryBuildingBlocks/MachineryItemState/…"


@dataclass(slots=True)
class _Seen:
    """A node met on the walk, with the machine it belongs to."""

    node_id: ua.NodeId
    name: str  # browse name, without namespace
    name_uri: str  # namespace URI of the browse name
    path: str
    type_def: tuple[int, str | int]  # (namespace index, identifier) of the type definition
    machine: str  # browse path of the machine object it belongs to
    children: list[_Seen] = field(default_factory=list)


def _key(node_id: ua.NodeId) -> tuple[int, str | int]:
    ident = node_id.Identifier
    return int(node_id.NamespaceIndex), ident if isinstance(ident, int | str) else str(ident)


def _node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    ident = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(ident, ua.Int16(namespace))


def _plain(node_id: ua.NodeId) -> ua.NodeId:
    """A NodeId of its own from an ExpandedNodeId of a reference (no server index, no URI)."""
    return ua.NodeId(node_id.Identifier, node_id.NamespaceIndex)


async def _with_subtypes(client: Client, roots: Iterable[ua.NodeId]) -> set[tuple[int, str | int]]:
    """The types and their subtypes (a vendor's MyMillType derived from MachineToolType)."""
    found = {_key(r) for r in roots}
    level = list(roots)
    while level and len(found) < _MAX_SUBTYPES:
        results = await browse_children(
            client, level, reference=ObjectIds.HasSubtype, node_classes=ua.NodeClass.ObjectType
        )
        level = []
        for refs in results:
            for ref in refs:
                if _key(ref.NodeId) not in found:
                    found.add(_key(ref.NodeId))
                    level.append(_plain(ref.NodeId))
    return found


class _Types:
    """The standard types as this server numbers them, each with its subtypes."""

    def __init__(self, namespaces: Sequence[str]) -> None:
        self._index = {uri: i for i, uri in enumerate(namespaces)}
        self.sets: dict[tuple[str, int], set[tuple[int, str | int]]] = {}

    def node_id(self, ref: tuple[str, int]) -> ua.NodeId | None:
        idx = self._index.get(ref[0])
        return None if idx is None else _node_id(ref[1], idx)

    async def load(self, client: Client) -> bool:
        """False when the server has neither namespace: nothing to look for."""
        if MACHINERY_URI not in self._index and MACHINE_TOOL_URI not in self._index:
            return False
        for ref in (
            ITEM_STATE_TYPE,
            OPERATION_COUNTER_TYPE,
            MACHINE_TOOL_TYPE,
            STATISTICS_TYPE,
            JOB_TYPE,
            ACTIVE_PROGRAM_TYPE,
        ):
            nid = self.node_id(ref)
            self.sets[ref] = set() if nid is None else await _with_subtypes(client, [nid])
        return True

    def is_a(self, seen: _Seen, ref: tuple[str, int]) -> bool:
        return seen.type_def in self.sets.get(ref, set())


async def _walk(
    client: Client, types: _Types, namespaces: Sequence[str], max_nodes: int
) -> list[_Seen]:
    """Every Object and Variable down to MAX_DEPTH, each tagged with its machine's path."""
    machines_folder = types.node_id(MACHINES_FOLDER)
    root = _Seen(
        _node_id(ObjectIds.ObjectsFolder), "Objects", "", "Objects", (0, 0), machine="Objects"
    )
    level = [root]
    found: list[_Seen] = []
    for _depth in range(MAX_DEPTH):
        if not level or len(found) >= max_nodes:
            break
        parents = [s for s in level if s.node_id is not None]
        results = await browse_children(client, [p.node_id for p in parents])
        level = []
        for parent, refs in zip(parents, results, strict=True):
            for ref in refs:
                if len(found) >= max_nodes:
                    log.info("companion discovery stopped at %d nodes", max_nodes)
                    break
                node_id = _plain(ref.NodeId)
                bname = ref.BrowseName
                idx = bname.NamespaceIndex
                path = f"{parent.path}/{bname.Name}"
                seen = _Seen(
                    node_id,
                    bname.Name or "",
                    namespaces[idx] if idx < len(namespaces) else "",
                    path,
                    _key(ref.TypeDefinition) if ref.TypeDefinition else (0, 0),
                    parent.machine,
                )
                under_machines = machines_folder is not None and parent.node_id == machines_folder
                if under_machines or types.is_a(seen, MACHINE_TOOL_TYPE):
                    seen.machine = path
                parent.children.append(seen)
                found.append(seen)
                if ref.NodeClass == ua.NodeClass.Object:
                    level.append(seen)
    return found


def _child(seen: _Seen, name: str) -> _Seen | None:
    return next((c for c in seen.children if c.name == name), None)


def _machine_of(seen: _Seen) -> str:
    """The machine's path; outside ``Machines`` and any MachineToolType, the top object."""
    if seen.machine != "Objects":
        return seen.machine
    return "/".join(seen.path.split("/")[:2])


async def _job_rank(client: Client, job: _Seen) -> int:
    """0 for a running job, else 1: the job a running machine is counting comes first."""
    state = _child(job, "State")
    if state is None:
        return 1
    try:
        # State/CurrentState lies one level past the walk when the job is at depth 5
        current = await client.get_node(state.node_id).get_child("0:CurrentState")
        value = await current.read_value()
    except UaStatusCodeError:
        return 1
    text = value.Text if isinstance(value, ua.LocalizedText) else str(value)
    return 0 if text == "Running" else 1


async def discover(client: Client, *, max_nodes: int = 5000) -> list[CompanionNode]:
    """Proposals for every machine with Machinery / Machine Tools objects; [] when none."""
    namespaces: list[str] = list(await client.get_namespace_array())
    types = _Types(namespaces)
    if not await types.load(client):
        return []
    found = await _walk(client, types, namespaces, max_nodes)
    # per machine: signal -> (rank, proposal); the lowest rank wins
    best: dict[str, dict[str, tuple[int, CompanionNode]]] = {}

    def propose(seen: _Seen, var: _Seen | None, signal: str, rank: int, spec: str) -> None:
        if var is None:
            return
        value_map = dict(ITEM_STATE_MAP) if signal == "state" else None
        proposal = CompanionNode(
            nsu_node_id(var.node_id, namespaces), signal, value_map, spec, var.path
        )
        slot = best.setdefault(_machine_of(seen), {})
        if signal not in slot or rank < slot[signal][0]:
            slot[signal] = (rank, proposal)

    jobs: list[_Seen] = []
    for seen in found:
        if types.is_a(seen, ITEM_STATE_TYPE):
            propose(seen, _child(seen, "CurrentState"), "state", 0, SPEC_STATE)
        elif types.is_a(seen, ACTIVE_PROGRAM_TYPE):
            propose(seen, _child(seen, "Name"), "program", 0, SPEC_PROGRAM)
        elif types.is_a(seen, STATISTICS_TYPE) or types.is_a(seen, OPERATION_COUNTER_TYPE):
            lifetime = _child(seen, "PartsProducedInLifetime")
            propose(seen, lifetime, "part_count", 0, SPEC_LIFETIME)
        elif types.is_a(seen, JOB_TYPE):
            jobs.append(seen)
    if len(jobs) > _MAX_JOBS:
        log.info("companion discovery: %d jobs, the first %d considered", len(jobs), _MAX_JOBS)
    ranked = [(await _job_rank(client, job), job) for job in jobs[:_MAX_JOBS]]
    ranked.sort(key=lambda r: (r[0], r[1].path))
    for running, job in ranked:
        rank = 1 + running  # a running job beats the others; both lose to a lifetime counter
        propose(job, _child(job, "PartsCompleted"), "part_count", rank, SPEC_PARTS)
        propose(job, _child(job, "RunsCompleted"), "part_count", rank + 2, SPEC_RUNS)
        propose(job, _child(job, "PartsGood"), "good_count", rank, SPEC_GOOD)
    out = [p for machine in sorted(best) for _, p in best[machine].values()]
    log.debug("companion discovery: %d proposals over %d nodes", len(out), len(found))
    return out
