"""The program's answer to the engine stopping a deployment early.

When a step fails (a check's refusal, say) or the user presses Ctrl+C, the language host interrupts this program
with SIGINT, often while it is still registering resources. Python's default answer is a KeyboardInterrupt traceback
from the middle of a gRPC call, twice (once more from the runtime's shutdown), printed after the step's own message.
The engine has already said why it stopped, so the program ends at once and says nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

# The Python language runtime's exit code for "the error was already shown to the user": the language host then
# adds no line of its own about the program's exit.
ALREADY_REPORTED = 32


def _end_now(_signum: int, _frame: FrameType | None) -> None:
    os._exit(ALREADY_REPORTED)


def end_quietly_when_interrupted() -> bool:
    """Install the handler (only the main thread may; under test harnesses that run the program in a worker thread
    Python's default stays). Returns whether it was installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGINT, _end_now)
    return True
