from twisted.application.service import ServiceMaker

signerServer = ServiceMaker(
    "signer-server",
    "signer._tap_server",
    "CAcert signer server: signs, revokes and serves CRLs over a serial line",
    "signer-server",
)
