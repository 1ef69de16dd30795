"""A real pymodbus server for tests, with a datastore the test writes into.

:class:`ModbusStore` is the datastore: per unit id, four tables (coils, discrete inputs,
holding and input registers) a test fills with :meth:`ModbusStore.set_words`,
:meth:`~ModbusStore.set_float32` and friends. It can refuse chosen addresses (the server
answers ``02 Illegal Data Address`` to any read touching one), and "unplug" a unit (the
server does not answer it at all, as a meter with a cut RS-485 pair). pymodbus 3.16 takes
such a store as a :class:`ModbusServerContext` that declares itself an "old simulator": the
server then calls its ``async_getValues`` for every read.

:class:`ModbusTcpTestServer` serves it on 127.0.0.1 (stop and start again on the same port
for outage tests); :class:`ModbusRtuTestServer` serves it on a serial device, one end of a
:func:`pty_pair` made by socat.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from microfactory.cli.ports import free_port

FUNCTIONS = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
WRITES = {5: "coil", 15: "coil", 6: "holding", 16: "holding", 22: "holding", 23: "holding"}


def float32_words(value: float, word_order: str = "big") -> list[int]:
    """The two registers of a float32 (big-endian bytes), most significant word first or last."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo] if word_order == "big" else [lo, hi]


def int_words(value: int, words: int, signed: bool = True, word_order: str = "big") -> list[int]:
    """The registers of an integer of ``words`` 16-bit words."""
    raw = value.to_bytes(words * 2, "big", signed=signed)
    out = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return out if word_order == "big" else out[::-1]


class ModbusStore(ModbusServerContext):
    """Registers and bits per unit id, written by the test, read by the server."""

    def __init__(self, units: Iterable[int] = (1,)) -> None:
        # not super().__init__(): it builds the deprecated simulator device and logs warnings
        self.old_simulator = True  # the server then calls async_getValues / async_setValues
        self.simdevices = []
        self._tables: dict[int, dict[str, dict[int, int]]] = {
            u: {name: {} for name in FUNCTIONS.values()} for u in units
        }
        self._refused: set[tuple[int, str, int]] = set()
        self._unplugged: set[int] = set()
        self._behind_gateway: set[int] = set()  # unplugged units a gateway answers 0B for
        self.requests: list[tuple[int, int, int, int]] = []  # (unit, function code, address, count)

    # ------------------------------------------------------------------ for the test
    def set_words(self, unit: int, function: str, address: int, words: Sequence[int]) -> None:
        for i, w in enumerate(words):
            self._tables[unit][function][address + i] = int(w) & 0xFFFF

    def set_float32(
        self, unit: int, function: str, address: int, value: float, word_order: str = "big"
    ) -> None:
        self.set_words(unit, function, address, float32_words(value, word_order))

    def set_bits(self, unit: int, function: str, address: int, bits: Sequence[bool]) -> None:
        for i, b in enumerate(bits):
            self._tables[unit][function][address + i] = int(bool(b))

    def refuse(self, unit: int, function: str, address: int, refused: bool = True) -> None:
        """Answer 02 Illegal Data Address to any read touching ``address`` (or stop to)."""
        key = (unit, function, address)
        if refused:
            self._refused.add(key)
        else:
            self._refused.discard(key)

    def unplug(self, unit: int, unplugged: bool = True, gateway: bool = False) -> None:
        """Make ``unit`` silent (no answer at all), or answer again.

        With ``gateway``, the server answers as a TCP-to-RS-485 gateway does for a device
        that does not answer behind it: ``0B Gateway Target Device Failed to Respond``.
        """
        if unplugged:
            self._unplugged.add(unit)
            if gateway:
                self._behind_gateway.add(unit)
        else:
            self._unplugged.discard(unit)
            self._behind_gateway.discard(unit)

    # ------------------------------------------------------------------ the server's side
    def _table(self, device_id: int, function: str) -> dict[int, int]:
        if device_id in self._unplugged or device_id not in self._tables:
            raise NoSuchIdException(f"device_id {device_id} is not there")
        return self._tables[device_id][function]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self.requests.append((device_id, func_code, address, count))
        function = FUNCTIONS.get(func_code) or WRITES.get(func_code)
        if function is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if device_id in self._behind_gateway:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = self._table(device_id, function)
        if any((device_id, function, a) in self._refused for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        values = [table.get(a, 0) for a in range(address, address + count)]
        if function in ("coil", "discrete"):
            return [bool(v) for v in values]
        return values

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        function = WRITES.get(func_code)
        if function is None:
            return ExcCodes.ILLEGAL_FUNCTION
        self.set_words(device_id, function, address, [int(v) for v in values])
        return None

    def device_ids(self) -> list[int]:
        return sorted(self._tables)


class ModbusTcpTestServer:
    """``store`` served over Modbus TCP on 127.0.0.1; stops and starts on the same port."""

    def __init__(self, store: ModbusStore, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = ModbusTcpServer(
            self.store, address=("127.0.0.1", self.port), ignore_missing_devices=True
        )
        deadline = time.monotonic() + 10
        while True:  # the port of a server just stopped may take a moment to be free again
            try:
                await server.serve_forever(background=True)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]


class ModbusRtuTestServer:
    """``store`` served over Modbus RTU on the serial device ``port``."""

    def __init__(self, store: ModbusStore, port: str, baudrate: int = 19200, parity: str = "N"):
        self.store = store
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self._server: ModbusSerialServer | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = ModbusSerialServer(
            self.store,
            framer=FramerType.RTU,
            port=self.port,
            baudrate=self.baudrate,
            parity=self.parity,
            ignore_missing_devices=True,
        )
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def pty_pair(folder: Path) -> Iterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals (a null-modem cable) made by socat: (server end, client end)."""
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is not installed (apt-get install socat)")
    a, b = folder / "ttyA", folder / "ttyB"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat did not make the pty pair (exit {proc.poll()})")
            time.sleep(0.05)
        yield a, b
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
