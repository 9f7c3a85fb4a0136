"""The signing-host role: dispatcher, X.509 CA, CRLs, OpenPGP certification, time sync."""
