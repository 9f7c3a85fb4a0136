from twisted.application.service import ServiceMaker

signerClient = ServiceMaker(
    "signer-client",
    "signer._tap_client",
    "CAcert signer client: polls the WebDB and talks to the signer over a serial line",
    "signer-client",
)
