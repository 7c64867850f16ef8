"""A booking fixture site, for rollbacks: seats to reserve, a card to charge, a confirmation that fails. It keeps
its own state (which seats are held, which charges are refunded) and a log of the calls it got, so that a
test checks on the site's side what a rollback undid.

- `GET /book?seat=A1`: a form; `POST /reserve` holds the seat and shows `#reservation` (`R1`, …).
- `POST /api/release?reservation=R1`: frees the seat (JSON); it can be held back (`hold_release`).
- `GET /pay?reservation=R1`: a card form; `POST /charge` shows `#charge` (`C1`, …).
- `GET /charges/C1`: the charge with a `#refund` button (none while `refunds_broken`); `POST /refund` refunds.
- `GET /api/confirm`: 503, the late step that fails (200 once `confirm_works`)."""

from __future__ import annotations

import itertools
import threading
from urllib.parse import parse_qs, urlparse

from tests.loopback import LoopbackServer, Reply, Request, html_reply, json_reply

SEATS = ("A1", "A2", "A3", "A4")


class BookingSite:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seats: dict[str, str | None] = dict.fromkeys(SEATS)  # seat -> the reservation holding it
        self.reservations: dict[str, str] = {}  # reservation -> seat
        self.charges: dict[str, dict[str, str]] = {}  # charge -> {reservation, status: charged | refunded}
        self.calls: list[str] = []  # what was undone, in order: "release R1", "refund C1"
        self.refunds_broken = False
        self.confirm_works = False
        self.release_seen = threading.Event()  # a release came in (and waits, while hold_release is clear)
        self.hold_release = threading.Event()
        self.hold_release.set()  # set: releases answer at once
        self._numbers = itertools.count(1)
        self.server = LoopbackServer(self._answer)
        self.url = self.server.url

    def __enter__(self) -> BookingSite:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold_release.set()
        self.server.__exit__(*exc)

    def held(self) -> dict[str, str]:
        """The seats held now, with their reservations."""
        with self.lock:
            return {seat: r for seat, r in self.seats.items() if r is not None}

    def charge_statuses(self) -> dict[str, str]:
        with self.lock:
            return {c: v["status"] for c, v in self.charges.items()}

    def _answer(self, request: Request) -> Reply:
        url = urlparse(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if request.method == "POST":
            return self._post(url.path, {**query, **form})
        if url.path == "/book":
            seat = query.get("seat", "")
            return _page(
                f'<h1>Seat {seat}</h1><form method="post" action="/reserve"><input type="hidden" name="seat" '
                f'value="{seat}"><button id="reserve" type="submit">Reserve</button></form>'
            )
        if url.path == "/reserved":
            return _page(f'<p>Reserved: <span id="reservation">{query.get("id", "")}</span></p>')
        if url.path == "/pay":
            reservation = query.get("reservation", "")
            return _page(
                f'<form method="post" action="/charge"><input type="hidden" name="reservation" value="{reservation}">'
                '<input id="card" name="card"><button id="charge" type="submit">Pay</button></form>'
            )
        if url.path == "/charged":
            return _page(f'<p>Charged: <span id="charge">{query.get("id", "")}</span></p>')
        if url.path.startswith("/charges/"):
            charge = url.path.removeprefix("/charges/")
            with self.lock:
                status = self.charges.get(charge, {}).get("status", "unknown")
            button = "" if self.refunds_broken else '<button id="refund" type="submit">Refund</button>'
            return _page(
                f'<p id="status">{status}</p><form method="post" action="/refund">'
                f'<input type="hidden" name="charge" value="{charge}">{button}</form>'
            )
        if url.path == "/api/confirm":
            return json_reply({"confirmed": True}) if self.confirm_works else json_reply({"error": "down"}, 503)
        return _page("not here", 404)

    def _post(self, path: str, form: dict[str, str]) -> Reply:
        if path == "/reserve":
            with self.lock:
                seat = form.get("seat", "")
                if seat not in self.seats or self.seats[seat] is not None:
                    return _page(f'<p id="error">seat {seat} is not free</p>', 409)
                reservation = f"R{next(self._numbers)}"
                self.seats[seat] = reservation
                self.reservations[reservation] = seat
            return Reply(303, headers={"Location": f"/reserved?id={reservation}"})
        if path == "/charge":
            with self.lock:
                charge = f"C{next(self._numbers)}"
                self.charges[charge] = {"reservation": form.get("reservation", ""), "status": "charged"}
            return Reply(303, headers={"Location": f"/charged?id={charge}"})
        if path == "/refund":
            charge = form.get("charge", "")
            with self.lock:
                if charge in self.charges:
                    self.charges[charge]["status"] = "refunded"
                self.calls.append(f"refund {charge}")
            return Reply(303, headers={"Location": f"/charges/{charge}"})
        if path == "/api/release":
            reservation = form.get("reservation", "")
            with self.lock:
                self.calls.append(f"release {reservation}")
            self.release_seen.set()
            self.hold_release.wait(60)  # held back by a test, so that a kill lands while it is in flight
            with self.lock:
                seat = self.reservations.get(reservation)
                if seat is None:
                    return json_reply({"error": f"no reservation {reservation}"}, 404)
                if self.seats.get(seat) == reservation:
                    self.seats[seat] = None
            return json_reply({"released": seat})
        return _page("not here", 404)


def _page(body: str, status: int = 200) -> Reply:
    return html_reply(f"<!doctype html><html><body>{body}</body></html>", status)
