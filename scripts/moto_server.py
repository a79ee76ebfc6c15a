"""moto_server with one fix: an SQS delete holds its queue's lock.

moto 5.2's `Queue.delete_message` scans the queue's message list and then assigns a new
list, without the `_messages_lock` that sends take. moto serves each request on a thread of
its own, so two deletes at once can each assign a list that still holds the message the
other removed (the deleted message comes back a visibility timeout later), and a send that
lands between them is dropped with the list it went into. A worker deletes in parallel
batches while tests send, so the tests' moto needs the lock (what it cost: docs/development.md).

scripts/install-moto.sh writes .venv/bin/moto_server to run this file; everything that starts
moto (the tests' harness, `make dev`, `make emulator-up`) goes through it.

`--self-check` runs two deleters and a sender against one queue of moto's own backend in
this process, first as moto ships and then with the fix, prints one line per run, and exits
non-zero unless the fixed run keeps every message where it belongs.
"""

import sys
import threading

from moto.sqs import models

_unlocked_delete = models.Queue.delete_message


def _locked_delete(self, receipt_handle):
    with self._messages_lock:
        _unlocked_delete(self, receipt_handle)


def apply_fix():
    models.Queue.delete_message = _locked_delete


def race(label, backend, messages=200, late=60):
    """Deletes every message from two threads while a third sends `late` more; returns how
    many deleted messages came back and how many sent ones are missing."""
    name = f"self-check-{label}"
    backend.create_queue(name)
    for i in range(messages):
        backend.send_message(name, f"early {i}")
    # Each marked received as ReceiveMessage does (a ReceiveMessage call rescans the queue).
    queue = backend.get_queue(name)
    for m in queue._messages:
        m.mark_received(visibility_timeout=300)
    handles = [m.receipt_handle for m in queue._messages]

    def deleter(own):
        for handle in own:
            backend.delete_message(name, handle)

    def sender():
        for i in range(late):
            backend.send_message(name, f"late {i}")

    threads = [threading.Thread(target=deleter, args=(handles[k::2],)) for k in range(2)]
    threads.append(threading.Thread(target=sender))
    # Threads switch every microsecond instead of every 5 ms, so the scans overlap each run.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.setswitchinterval(interval)
    bodies = [m.body for m in queue._messages]
    back = sum(b.startswith("early") for b in bodies)
    lost = late - sum(b.startswith("late") for b in bodies)
    return back, lost


def self_check():
    backend = models.sqs_backends["123456789012"]["us-east-1"]
    back, lost = race("as-shipped", backend)
    print(f"moto as shipped: {back} deleted messages back, {lost} sent messages lost")
    apply_fix()
    back, lost = race("fixed", backend)
    print(f"moto with the lock: {back} deleted messages back, {lost} sent messages lost")
    return 0 if back == 0 and lost == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-check"]:
        sys.exit(self_check())
    apply_fix()
    from moto.server import main

    sys.exit(main())
