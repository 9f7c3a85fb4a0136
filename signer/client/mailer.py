"""Member mails: built with :mod:`email`, translated with gettext, sent over SMTP.

Three mails carry the facts of the legacy client's texts (client.md, "Mails"):
certificate issued, OpenPGP key signed, certificate revoked. Each is rendered
in the member's language (``users.language``, e.g. ``de_DE`` or ``de``) from
the gettext catalogues shipped in ``signer/client/locale`` (domain
``signer``), falling back to English.

Messages are proper MIME (UTF-8 body, RFC 2047 encoded headers, Date and
Message-ID) and go out through Twisted's SMTP client. A recipient address
that is not a plain ``local@domain`` (or carries line breaks) is refused
before anything is sent. Failures are the caller's to log: a mail never
undoes or repeats a signing.
"""

from __future__ import annotations

import datetime
import gettext
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as DEFAULT_POLICY
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred

from signer.client.config import MailConfig

DOMAIN = "signer"
DEFAULT_LOCALE_DIR = Path(__file__).resolve().parent / "locale"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@" + _LABEL + r"(?:\." + _LABEL + r")+"
)


class BadAddress(ValueError):
    """A recipient address we will not hand to SMTP."""


@dataclass(frozen=True)
class Mail:
    """A rendered mail: envelope recipient and the message bytes.

    ``message`` has LF line ends: Twisted's SMTP client turns them into CRLF
    (and dot-stuffs) on the wire.
    """

    recipient: str
    subject: str
    body: str
    message: bytes


def check_address(address: str) -> str:
    """``address`` when it is a plain ``local@domain.tld``; else :class:`BadAddress`."""
    if not address or len(address) > 254 or not _ADDRESS.fullmatch(address):
        raise BadAddress(f"{address!r} is not a usable mail address")
    local = address.split("@", 1)[0]
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise BadAddress(f"{address!r} is not a usable mail address")
    return address


# The texts. msgids are the English texts; placeholders in braces.
N_ = lambda text: text  # noqa: E731  (marks strings for extraction)

SUBJECT_CERTIFICATE = N_("[CAcert.org] Your certificate")
SUBJECT_OPENPGP = N_("[CAcert.org] Your GPG/PGP Key")

BODY_ISSUED = N_(
    "Hi {fname},\n"
    "\n"
    "You can collect your new certificate for {name} by going to the following location:\n"
    "\n"
    "{url}\n"
    "\n"
    "If you have not imported CAcert's root certificate, please go to:\n"
    "{root_url}\n"
    "Root certificate fingerprints:\n"
    "{fingerprints}\n"
    "\n"
    "Best regards\n"
    "CAcert.org Support!\n"
)
BODY_OPENPGP = N_(
    "Hi {fname},\n"
    "\n"
    "Your CAcert signed key for {email} is available online at:\n"
    "\n"
    "{url}\n"
    "\n"
    "To help improve the trust of CAcert in general, it's appreciated if you could "
    "also sign our key and upload it to a key server. Below is a copy of our primary "
    "key details:\n"
    "\n"
    "Key ID: {key_id}\n"
    "Key fingerprint: {fingerprint}\n"
    "\n"
    "Best regards\n"
    "CAcert.org Support!\n"
)
BODY_REVOKED = N_(
    "Hi {fname},\n"
    "\n"
    "Your certificate for {name} with the serial number {serial} has been revoked, "
    "as per request.\n"
    "\n"
    "Best regards\n"
    "CAcert.org Support!\n"
)


class MailRenderer:
    """Renders the three mails in a member's language."""

    def __init__(self, config: MailConfig, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.locale_dir = config.locale_dir or DEFAULT_LOCALE_DIR
        self.clock = clock
        self._cache: dict[str, gettext.NullTranslations] = {}

    def translation(self, language: str) -> gettext.NullTranslations:
        """The catalogue for ``language`` (``de_DE``, ``de``, ``pt-BR``...), English as fallback."""
        key = (language or "").strip().replace("-", "_")
        if key not in self._cache:
            languages = [key] if key else []
            self._cache[key] = gettext.translation(
                DOMAIN, localedir=str(self.locale_dir), languages=languages + ["en"], fallback=True
            )
        return self._cache[key]

    def _render(self, language: str, subject: str, body: str, recipient: str, **facts: str) -> Mail:
        check_address(recipient)
        translation = self.translation(language)
        subject_text = translation.gettext(subject)
        body_text = translation.gettext(body).format(**facts)
        message = EmailMessage(policy=DEFAULT_POLICY)
        message["From"] = formataddr((self.config.sender_name, self.config.sender))
        message["To"] = recipient
        message["Subject"] = subject_text
        now = (
            datetime.datetime.fromtimestamp(self.clock(), datetime.timezone.utc)
            if self.clock
            else datetime.datetime.now(datetime.timezone.utc)
        )
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid(domain=self.config.sender.rpartition("@")[2] or None)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body_text, charset="utf-8")
        return Mail(recipient, subject_text, body_text, bytes(message))

    def _fingerprints(self) -> str:
        return "\n".join(self.config.root_fingerprints)

    def certificate_issued(
        self, recipient: str, fname: str, language: str, name: str, row_id: int, server: bool
    ) -> Mail:
        """The "certificate issued" mail (client or server certificate)."""
        url = (self.config.server_cert_url if server else self.config.client_cert_url).format(id=row_id)
        return self._render(
            language,
            SUBJECT_CERTIFICATE,
            BODY_ISSUED,
            recipient,
            fname=fname,
            name=name,
            url=url,
            root_url=self.config.root_url,
            fingerprints=self._fingerprints(),
        )

    def openpgp_signed(self, recipient: str, fname: str, language: str, email: str, row_id: int) -> Mail:
        """The "OpenPGP key signed" mail."""
        return self._render(
            language,
            SUBJECT_OPENPGP,
            BODY_OPENPGP,
            recipient,
            fname=fname,
            email=email,
            url=self.config.gpg_url.format(id=row_id),
            key_id=self.config.gpg_key_id,
            fingerprint=self.config.gpg_fingerprint,
        )

    def certificate_revoked(self, recipient: str, fname: str, language: str, name: str, serial: str) -> Mail:
        """The "certificate revoked" mail."""
        return self._render(
            language, SUBJECT_CERTIFICATE, BODY_REVOKED, recipient, fname=fname, name=name, serial=serial
        )


class SMTPSender:
    """Sends rendered mails with :func:`twisted.mail.smtp.sendmail`."""

    def __init__(self, config: MailConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor

    def send(self, mail: Mail) -> Deferred[Any]:
        from twisted.mail.smtp import sendmail

        d: Deferred[Any] = sendmail(
            self.config.smtp_host,
            self.config.sender,
            [mail.recipient],
            mail.message,
            port=self.config.smtp_port,
            reactor=self.reactor,
            requireTransportSecurity=False,
        )
        d.addTimeout(self.config.timeout, self.reactor)
        return d
