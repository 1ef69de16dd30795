"""OPC UA companion-specification objects of the simulated CNC mill (OPC 40001-1, OPC 40501-1).

Real machine tools increasingly show their state and their production through the companion
specifications rather than (or beside) a vendor namespace; the gateway's companion discovery
(``gateway/adapters/opcua/companion.py``) must be tested against such a server, so the mill
shows, alongside its own ``Objects/Machine``::

    Objects/Machines                              Machinery FolderType  (Machinery i=1001)
      <machine_id>                                MachineToolType       (MachineTool i=13)
        Identification                            MachineToolIdentificationType (MT i=11)
          Manufacturer, Model, SerialNumber, ProductInstanceUri           (DI browse names)
        MachineryBuildingBlocks                   FolderType, HasAddIn to:
          MachineryItemState                      MachineryItemState_StateMachineType (i=1002)
          MachineryOperationMode                  MachineOperationModeStateMachineType (MT 1003)
        Production                                ProductionType        (MT i=21)
          ActiveProgram  (Name, State)            ProductionActiveProgramType (MT i=32)
          ProductionPlan                          ProductionJobListType (MT i=30)
            Job  (Identifier, NumberInList, RunsCompleted, RunsPlanned, PartsCompleted,
                  PartsGood, State)               ProductionJobType     (MT i=29)
          Statistics/PartsProducedInLifetime      ProductionStatisticsType (MT i=20)

The types are created by hand with the standard NodeIds and BrowseNames of the published
NodeSet2 files (OPC Foundation UA-Nodeset, as shipped by the npm package
``node-opcua-nodesets`` 2.182: DI 1.05.0, Machinery 1.04.1, MachineTool 1.02.0), not imported
with ``Server.import_xml``: asyncua 2.1 cannot import that chain (DI 1.05 refuses to load on
asyncua's 1.05 base address space with BadParentNodeIdInvalid, and MachineTool 1.02 requires
the ISA95-JOBCONTROL_V2 and Machinery/Jobs models, the former not published in that
package), and the ~1 MB of XML per server would only give a client types it never browses.
What a client can check is all here: the namespace URIs, the type NodeIds and their subtype
chain up to the base types, the state objects CurrentState/Id points at, the browse names.
Building them adds about 45 ms to a server's first start (asyncua's own ``init`` takes
1.2-1.9 s on the 2-core test machine); a restart reuses them.

MachineTool 1.02 marks the ProductionType family deprecated in favour of OPC 40001-3
(Machinery Job Management); 1.00/1.01 servers, i.e. the controllers in the field, ship it,
and 1.02 keeps it in the nodeset, so it is what the mill shows.

The specification has no bad-part counter on a job: ``PartsCompleted`` and ``PartsGood``
(both optional) are the counters; scrap is their difference. The simulated job is one entry of
the ProductionPlan with a stable NodeId whose contents change per batch (a real controller
may list one object per job instead): its counters restart at 0 when the next batch starts
running; ``Statistics/PartsProducedInLifetime`` never restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaStatusCodeError

from .model import MachineSnapshot, State

DI_URI: Final = "http://opcfoundation.org/UA/DI/"
MACHINERY_URI: Final = "http://opcfoundation.org/UA/Machinery/"
MACHINE_TOOL_URI: Final = "http://opcfoundation.org/UA/MachineTool/"
COMPANION_URIS: Final = (DI_URI, MACHINERY_URI, MACHINE_TOOL_URI)

# ObjectTypes: (namespace URI, numeric id, browse name, supertype (URI or "" for ns 0, id))
TYPES: Final[tuple[tuple[str, int, str, tuple[str, int], bool], ...]] = (
    (DI_URI, 1005, "FunctionalGroupType", ("", ObjectIds.FolderType), False),
    (MACHINERY_URI, 1004, "MachineryItemIdentificationType", (DI_URI, 1005), True),
    (MACHINERY_URI, 1012, "MachineIdentificationType", (MACHINERY_URI, 1004), False),
    (
        MACHINERY_URI,
        1002,
        "MachineryItemState_StateMachineType",
        ("", ObjectIds.FiniteStateMachineType),
        False,
    ),
    (
        MACHINERY_URI,
        1008,
        "MachineryOperationModeStateMachineType",
        ("", ObjectIds.FiniteStateMachineType),
        False,
    ),
    (MACHINE_TOOL_URI, 11, "MachineToolIdentificationType", (MACHINERY_URI, 1012), False),
    (
        MACHINE_TOOL_URI,
        1003,
        "MachineOperationModeStateMachineType",
        (MACHINERY_URI, 1008),
        False,
    ),
    (MACHINE_TOOL_URI, 13, "MachineToolType", ("", ObjectIds.BaseObjectType), False),
    (MACHINE_TOOL_URI, 21, "ProductionType", ("", ObjectIds.BaseObjectType), False),
    (MACHINE_TOOL_URI, 20, "ProductionStatisticsType", ("", ObjectIds.BaseObjectType), False),
    (MACHINE_TOOL_URI, 59, "ProductionProgramType", ("", ObjectIds.BaseObjectType), False),
    (MACHINE_TOOL_URI, 32, "ProductionActiveProgramType", (MACHINE_TOOL_URI, 59), False),
    (
        MACHINE_TOOL_URI,
        24,
        "ProductionStateMachineType",
        ("", ObjectIds.FiniteStateMachineType),
        False,
    ),
    (MACHINE_TOOL_URI, 15, "ProductionProgramStateMachineType", (MACHINE_TOOL_URI, 24), False),
    (MACHINE_TOOL_URI, 28, "ProductionJobStateMachineType", (MACHINE_TOOL_URI, 24), False),
    (MACHINE_TOOL_URI, 30, "ProductionJobListType", ("", ObjectIds.OrderedListType), False),
    (MACHINE_TOOL_URI, 29, "ProductionJobType", ("", ObjectIds.BaseObjectType), False),
)

# State objects of the state machine types: name -> (numeric id, StateNumber, its property id)
StateTable = Mapping[str, tuple[int, int, int]]
ITEM_STATES: Final[StateTable] = {
    "NotAvailable": (5005, 0, 6039),
    "OutOfService": (5004, 1, 6038),
    "NotExecuting": (5007, 2, 6041),
    "Executing": (5006, 3, 6040),
}
OPERATION_MODES: Final[StateTable] = {
    "None": (5024, 0, 6059),
    "Maintenance": (5025, 1, 6060),
    "Setup": (5027, 2, 6062),
    "Processing": (5026, 3, 6061),
}
JOB_STATES: Final[StateTable] = {
    "Initializing": (5015, 0, 6050),
    "Running": (5017, 1, 6052),
    "Ended": (5014, 2, 6049),
    "Interrupted": (5016, 3, 6051),
    "Aborted": (5013, 4, 6048),
}
PROGRAM_STATES: Final[StateTable] = {
    "Initializing": (5039, 0, 6060),
    "Running": (5041, 1, 6062),
    "Ended": (5038, 2, 6059),
    "Interrupted": (5040, 3, 6061),
    "Aborted": (5037, 4, 6058),
}
_STATE_SETS: Final = (
    (MACHINERY_URI, 1002, ITEM_STATES),
    (MACHINERY_URI, 1008, OPERATION_MODES),
    (MACHINE_TOOL_URI, 28, JOB_STATES),
    (MACHINE_TOOL_URI, 15, PROGRAM_STATES),
)

ITEM_STATE_OF: Final[Mapping[State, str]] = {
    "running": "Executing",
    "idle": "NotExecuting",
    "setup": "NotExecuting",
    "fault": "OutOfService",
    "off": "NotAvailable",
}
PROGRAM_STATE_OF: Final[Mapping[State, str]] = {
    "running": "Running",
    "setup": "Initializing",
    "idle": "Interrupted",
    "fault": "Interrupted",
    "off": "Interrupted",
}


def node_id(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """A NodeId from plain Python values (asyncua's stubs want its own int/str types)."""
    ident = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(ident, ua.Int16(namespace))


async def _refer(parent: Node, child: Node, reference: int) -> None:
    """Make ``reference`` the one hierarchical reference from parent to child (e.g. HasAddIn).

    asyncua links a new node by HasComponent (Organizes under a folder); the specifications
    want HasAddIn for building blocks and the nameplate.
    """
    for ref in await parent.get_references(ObjectIds.HierarchicalReferences):
        if ref.NodeId == child.nodeid and ref.IsForward:
            await parent.delete_reference(child, ref.ReferenceTypeId)
    await parent.add_reference(child, reference)


@dataclass(frozen=True, slots=True)
class Identification:
    """What the nameplate says; the simulator's own, clearly not a real vendor."""

    manufacturer: str = "microfactory simulated machines"
    model: str = "SimMill 3-axis"
    serial_number: str = ""


@dataclass(frozen=True, slots=True)
class JobView:
    """The ProductionPlan entry as shown at one instant."""

    identifier: str
    number: int
    state: str
    runs_completed: int
    parts_completed: int
    parts_good: int


class JobTracker:
    """Cuts the model's lifetime counters into jobs, one per batch.

    A job ends when the machine goes from running to setup (the batch is done; its counters
    stay on show through the set-up) and the next one starts with its first cycle, so the
    last part of a batch is counted in its own job. A power loss or a fault interrupts the
    job, it does not end it (the model resumes the batch).
    """

    def __init__(self, machine_id: str) -> None:
        self._machine_id = machine_id
        self._number = 0
        self._program = ""
        self._base = (0, 0)
        self._ended = False
        self._previous: State | None = None

    def update(self, snap: MachineSnapshot) -> JobView:
        if self._number == 0 or (self._ended and snap.state == "running"):
            self._number += 1
            self._program = snap.program
            self._base = (snap.part_count, snap.good_count)
            self._ended = False
        elif snap.state == "setup" and self._previous == "running":
            self._ended = True
        self._previous = snap.state
        parts = snap.part_count - self._base[0]
        if self._ended:
            state = "Ended"
        elif snap.state in ("running", "idle"):
            state = "Running"
        elif snap.state == "setup":
            state = "Initializing" if parts == 0 else "Interrupted"
        else:
            state = "Interrupted"
        return JobView(
            identifier=f"{self._machine_id}/{self._number:04d}/{self._program}",
            number=self._number,
            state=state,
            runs_completed=parts,  # one part per run on this machine
            parts_completed=parts,
            parts_good=snap.good_count - self._base[1],
        )


class CompanionFace:
    """The companion objects of one machine server: built once, then fed every snapshot."""

    def __init__(
        self,
        *,
        machine_id: str,
        runs_planned: int,
        identification: Identification | None = None,
    ) -> None:
        self.machine_id = machine_id
        self.runs_planned = runs_planned
        self.identification = identification or Identification(serial_number=f"SIM-{machine_id}")
        self._jobs = JobTracker(machine_id)
        self._job: JobView | None = None
        self._ns: dict[str, int] = {}
        self._vars: dict[str, tuple[ua.NodeId, ua.VariantType]] = {}
        self._state_ids: dict[str, dict[str, ua.NodeId]] = {}

    # ------------------------------------------------------------------ building
    async def build(self, server: Server, own_idx: int) -> None:
        """Register the standard namespaces, the types, then the machine under Machines."""
        for uri in COMPANION_URIS:
            self._ns[uri] = await server.register_namespace(uri)
        machines = server.get_node(self.type_id(MACHINERY_URI, 1001))
        try:
            await machines.read_browse_name()
            self._state_ids.update(self._known_states())
        except UaStatusCodeError:  # the first machine of this server: types and folder
            await self._build_types(server)
            machines = await self._machines_folder(server)
        await self._build_machine(machines, own_idx)

    def _known_states(self) -> dict[str, dict[str, ua.NodeId]]:
        """The state objects' ids, by state-machine type, then state name."""
        known = {
            f"{uri}{number}": {name: self.type_id(uri, ids[0]) for name, ids in states.items()}
            for uri, number, states in _STATE_SETS
        }
        # the MachineTool operation mode inherits the Machinery states
        known[f"{MACHINE_TOOL_URI}1003"] = known[f"{MACHINERY_URI}1008"]
        return known

    def type_id(self, uri: str, identifier: int) -> ua.NodeId:
        return node_id(identifier, self._ns[uri])

    async def _build_types(self, server: Server) -> None:
        for uri, identifier, name, (super_uri, super_id), abstract in TYPES:
            parent = server.get_node(
                node_id(super_id) if not super_uri else self.type_id(super_uri, super_id)
            )
            node = await parent.add_object_type(
                self.type_id(uri, identifier), ua.QualifiedName(name, self._ns[uri])
            )
            if abstract:
                await node.write_attribute(
                    AttributeIds.IsAbstract,
                    ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)),
                )
        for uri, type_number, states in _STATE_SETS:
            machine_type = server.get_node(self.type_id(uri, type_number))
            for name, (identifier, number, number_id) in states.items():
                # built by hand, not instantiated: instantiation would give StateNumber a
                # generated id, which may be one a later standard node needs; and a state
                # object has no modelling rule (it belongs to the type, never copied)
                state = await machine_type.add_object(
                    self.type_id(uri, identifier), ua.QualifiedName(name, self._ns[uri])
                )
                state_type = ObjectIds.InitialStateType if number == 0 else ObjectIds.StateType
                await state.delete_reference(
                    node_id(ObjectIds.BaseObjectType),
                    ObjectIds.HasTypeDefinition,
                    bidirectional=False,
                )
                await state.add_reference(
                    node_id(state_type), ObjectIds.HasTypeDefinition, bidirectional=False
                )
                await state.add_property(
                    self.type_id(uri, number_id),
                    ua.QualifiedName("StateNumber", 0),
                    ua.Variant(number, ua.VariantType.UInt32),
                )
        self._state_ids.update(self._known_states())

    async def _machines_folder(self, server: Server) -> Node:
        return await server.nodes.objects.add_folder(
            self.type_id(MACHINERY_URI, 1001), ua.QualifiedName("Machines", self._ns[MACHINERY_URI])
        )

    def _instance(self, *path: str) -> str:
        return "/".join(("Machines", self.machine_id, *path))

    async def _object(
        self, parent: Node, own_idx: int, path: tuple[str, ...], bname_uri: str, type_: ua.NodeId
    ) -> Node:
        return await parent.add_object(
            node_id(self._instance(*path), own_idx),
            ua.QualifiedName(path[-1], self._ns[bname_uri]),
            objecttype=type_,
            instantiate_optional=False,
        )

    async def _variable(
        self,
        parent: Node,
        own_idx: int,
        path: tuple[str, ...],
        bname_uri: str,
        value: Any,
        vtype: ua.VariantType,
        *,
        prop: bool = False,
        key: str | None = None,
    ) -> Node:
        nodeid = node_id(self._instance(*path), own_idx)
        bname = ua.QualifiedName(path[-1], self._ns[bname_uri] if bname_uri else 0)
        add = parent.add_property if prop else parent.add_variable
        node = await add(nodeid, bname, ua.Variant(value, vtype))
        if key is not None:
            self._vars[key] = (node.nodeid, vtype)
        return node

    async def _state_machine(
        self,
        parent: Node,
        own_idx: int,
        path: tuple[str, ...],
        bname_uri: str,
        type_: tuple[str, int],
        key: str,
        *,
        reference: int = ObjectIds.HasComponent,
    ) -> None:
        machine = await self._object(parent, own_idx, path, bname_uri, self.type_id(*type_))
        if reference != ObjectIds.HasComponent:
            await _refer(parent, machine, reference)
        current = await machine.get_child("CurrentState")
        ident = await current.get_child("Id")
        self._vars[key] = (current.nodeid, ua.VariantType.LocalizedText)
        self._vars[f"{key}.Id"] = (ident.nodeid, ua.VariantType.NodeId)
        self._state_ids[key] = self._state_ids[f"{type_[0]}{type_[1]}"]

    async def _build_machine(self, machines: Node, idx: int) -> None:
        mt, mach, di = MACHINE_TOOL_URI, MACHINERY_URI, DI_URI
        ident = self.identification
        machine = await machines.add_object(
            node_id(self._instance(), idx),
            ua.QualifiedName(self.machine_id, idx),
            objecttype=self.type_id(mt, 13),
            instantiate_optional=False,
        )
        plate = await self._object(machine, idx, ("Identification",), di, self.type_id(mt, 11))
        await _refer(machine, plate, ObjectIds.HasAddIn)
        lt = ua.VariantType.LocalizedText
        s = ua.VariantType.String
        for name, value, vtype in (
            ("Manufacturer", ua.LocalizedText(ident.manufacturer, "en"), lt),
            ("Model", ua.LocalizedText(ident.model, "en"), lt),
            ("SerialNumber", ident.serial_number, s),
            ("ProductInstanceUri", f"urn:microfactory:sim:{self.machine_id}:machine", s),
        ):
            await self._variable(plate, idx, ("Identification", name), di, value, vtype, prop=True)
        blocks = await machine.add_folder(
            node_id(self._instance("MachineryBuildingBlocks"), idx),
            ua.QualifiedName("MachineryBuildingBlocks", self._ns[mach]),
        )
        for name, type_ in (
            ("MachineryItemState", (mach, 1002)),
            ("MachineryOperationMode", (mt, 1003)),
        ):
            await self._state_machine(
                blocks,
                idx,
                ("MachineryBuildingBlocks", name),
                mach,
                type_,
                name,
                reference=ObjectIds.HasAddIn,
            )
        production = await self._object(machine, idx, ("Production",), mt, self.type_id(mt, 21))
        program = ("Production", "ActiveProgram")
        active = await self._object(production, idx, program, mt, self.type_id(mt, 32))
        await self._variable(active, idx, (*program, "Name"), mt, "", s, key="Program.Name")
        await self._variable(
            active, idx, (*program, "NumberInList"), "", 0, ua.VariantType.UInt16, prop=True
        )
        await self._state_machine(active, idx, (*program, "State"), mt, (mt, 15), "Program.State")
        plan = await self._object(
            production, idx, ("Production", "ProductionPlan"), mt, self.type_id(mt, 30)
        )
        job_path = ("Production", "ProductionPlan", "Job")
        # a list entry is named by the vendor, in its own namespace (the type's <OrderedObject>)
        job = await plan.add_object(
            node_id(self._instance(*job_path), idx),
            ua.QualifiedName("Job", idx),
            objecttype=self.type_id(mt, 29),
            instantiate_optional=False,
        )
        u32 = ua.VariantType.UInt32
        await self._variable(
            job, idx, (*job_path, "Identifier"), mt, "", s, prop=True, key="Job.Id"
        )
        await self._variable(
            job, idx, (*job_path, "NumberInList"), "", 0, ua.VariantType.UInt16, prop=True
        )
        for name in ("RunsCompleted", "PartsCompleted", "PartsGood"):
            await self._variable(job, idx, (*job_path, name), mt, 0, u32, key=f"Job.{name}")
        planned = await self._variable(
            job, idx, (*job_path, "RunsPlanned"), mt, self.runs_planned, u32
        )
        await self._variable(
            planned,
            idx,
            (*job_path, "RunsPlanned", "IsValid"),
            mt,
            True,
            ua.VariantType.Boolean,
            prop=True,
        )
        await self._state_machine(job, idx, (*job_path, "State"), mt, (mt, 28), "Job.State")
        stats = ("Production", "Statistics")
        statistics = await self._object(production, idx, stats, mt, self.type_id(mt, 20))
        await self._variable(
            statistics, idx, (*stats, "PartsProducedInLifetime"), mt, 0, u32, key="Lifetime"
        )

    # ------------------------------------------------------------------ publishing
    def _state(self, key: str, name: str) -> dict[str, Any]:
        return {key: ua.LocalizedText(name, "en"), f"{key}.Id": self._state_ids[key][name]}

    def observe(self, snap: MachineSnapshot) -> None:
        """Follow the machine, also while the server is down, so no batch end is missed."""
        self._job = self._jobs.update(snap)

    def values(self, snap: MachineSnapshot) -> dict[str, Any]:
        """Every companion value at this (already observed) snapshot, keyed like the nodes."""
        job = self._job if self._job is not None else self._jobs.update(snap)
        out: dict[str, Any] = {
            "Program.Name": snap.program,
            "Job.Id": job.identifier,
            "Job.RunsCompleted": job.runs_completed,
            "Job.PartsCompleted": job.parts_completed,
            "Job.PartsGood": job.parts_good,
            "Lifetime": snap.part_count,
        }
        out.update(self._state("MachineryItemState", ITEM_STATE_OF[snap.state]))
        mode = "Setup" if snap.state == "setup" else "Processing"
        out.update(self._state("MachineryOperationMode", mode))
        out.update(self._state("Program.State", PROGRAM_STATE_OF[snap.state]))
        out.update(self._state("Job.State", job.state))
        return out

    def node(self, key: str) -> tuple[ua.NodeId, ua.VariantType]:
        """NodeId and variant type of a companion value (see :meth:`values` for the keys)."""
        return self._vars[key]
