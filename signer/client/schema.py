"""The WebDB tables the signer client touches, for MariaDB/MySQL and for sqlite.

These mirror the production CAcert schema as far as the client uses it (names,
types, defaults and the ``crt_name`` / ``revoked`` indexes the polling queries
rely on). The client never creates tables in production: the web application
owns the database. The schemas serve the tests, the demo, and small setups that
use the embedded sqlite WebDB (:func:`create_sqlite_webdb`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_X509_COMMON = """
  serial varchar(50) NOT NULL DEFAULT '',
  CN varchar(255) NOT NULL DEFAULT '',
  subject text NOT NULL,
  csr_name varchar(255) NOT NULL DEFAULT '',
  crt_name varchar(255) NOT NULL DEFAULT '',
  created datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  modified datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  revoked datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  expire datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  warning tinyint(1) NOT NULL DEFAULT 0,
  renewed tinyint(1) NOT NULL DEFAULT 0,
  rootcert int(2) NOT NULL DEFAULT 1,
  md varchar(7) NOT NULL DEFAULT 'sha512',
  type tinyint(4) unsigned DEFAULT NULL,
  description varchar(100) NOT NULL DEFAULT ''"""

MYSQL_SCHEMA: tuple[str, ...] = (
    f"""CREATE TABLE emailcerts (
  id int(11) NOT NULL AUTO_INCREMENT,
  memid int(11) NOT NULL DEFAULT 0,
  keytype char(2) NOT NULL DEFAULT 'NS',
  codesign tinyint(1) NOT NULL DEFAULT 0,
  disablelogin int(1) NOT NULL DEFAULT 0,{_X509_COMMON},
  PRIMARY KEY (id), KEY memid (memid), KEY serial (serial), KEY crt_name (crt_name),
  KEY revoked (revoked), KEY expire (expire)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    f"""CREATE TABLE domaincerts (
  id int(11) NOT NULL AUTO_INCREMENT,
  domid int(11) NOT NULL DEFAULT 0,{_X509_COMMON},
  PRIMARY KEY (id), KEY domid (domid), KEY serial (serial), KEY crt_name (crt_name),
  KEY revoked (revoked), KEY expire (expire)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    f"""CREATE TABLE orgemailcerts (
  id int(11) NOT NULL AUTO_INCREMENT,
  orgid int(11) NOT NULL DEFAULT 0,
  keytype char(2) NOT NULL DEFAULT 'NS',
  codesign tinyint(1) NOT NULL DEFAULT 0,
  ou varchar(50) NOT NULL DEFAULT '',{_X509_COMMON},
  PRIMARY KEY (id), KEY orgid (orgid), KEY serial (serial), KEY crt_name (crt_name),
  KEY revoked (revoked)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    f"""CREATE TABLE orgdomaincerts (
  id int(11) NOT NULL AUTO_INCREMENT,
  orgid int(11) NOT NULL DEFAULT 0,
  ou varchar(50) NOT NULL DEFAULT '',{_X509_COMMON},
  PRIMARY KEY (id), KEY orgid (orgid), KEY serial (serial), KEY crt_name (crt_name),
  KEY revoked (revoked)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE gpg (
  id int(11) NOT NULL AUTO_INCREMENT,
  memid int(11) NOT NULL DEFAULT 0,
  email varchar(255) NOT NULL DEFAULT '',
  level int(1) NOT NULL DEFAULT 0,
  multiple tinyint(1) NOT NULL DEFAULT 0,
  expires tinyint(1) NOT NULL DEFAULT 0,
  csr varchar(255) NOT NULL DEFAULT '',
  crt varchar(255) NOT NULL DEFAULT '',
  issued datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  expire datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  keyid char(18) DEFAULT NULL,
  warning tinyint(1) NOT NULL DEFAULT 0,
  description varchar(100) NOT NULL DEFAULT '',
  PRIMARY KEY (id), KEY memid (memid)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE domains (
  id int(11) NOT NULL AUTO_INCREMENT,
  memid int(11) NOT NULL DEFAULT 0,
  domain varchar(255) NOT NULL DEFAULT '',
  created datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  modified datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  deleted datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  PRIMARY KEY (id), KEY memid (memid), KEY domain (domain)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE org (
  orgid int(11) NOT NULL DEFAULT 0,
  memid int(11) NOT NULL DEFAULT 0,
  OU varchar(255) NOT NULL DEFAULT '',
  masteracc int(1) NOT NULL DEFAULT 0,
  comments text,
  UNIQUE KEY orgid (orgid, memid)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE users (
  id int(11) NOT NULL AUTO_INCREMENT,
  email varchar(255) NOT NULL DEFAULT '',
  password varchar(255) NOT NULL DEFAULT '',
  fname varchar(255) NOT NULL DEFAULT '',
  mname varchar(255) NOT NULL DEFAULT '',
  lname varchar(255) NOT NULL DEFAULT '',
  language varchar(5) NOT NULL DEFAULT '',
  created datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  modified datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  deleted datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  PRIMARY KEY (id), KEY email (email)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE notary (
  id int(11) NOT NULL AUTO_INCREMENT,
  `from` int(11) NOT NULL DEFAULT 0,
  `to` int(11) NOT NULL DEFAULT 0,
  points int(3) NOT NULL DEFAULT 0,
  awarded int(3) NOT NULL DEFAULT 0,
  method varchar(30) NOT NULL DEFAULT 'Face to Face Meeting',
  `date` varchar(255) NOT NULL DEFAULT '',
  `when` datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  deleted datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  PRIMARY KEY (id), KEY `from` (`from`), KEY `to` (`to`)
) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4""",
)


def _sqlite_schema() -> tuple[str, ...]:
    """The same tables for sqlite (types relaxed, same names, defaults, indexes)."""
    common = """
  serial TEXT NOT NULL DEFAULT '',
  CN TEXT NOT NULL DEFAULT '',
  subject TEXT NOT NULL DEFAULT '',
  csr_name TEXT NOT NULL DEFAULT '',
  crt_name TEXT NOT NULL DEFAULT '',
  created TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  modified TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  revoked TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  expire TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  warning INTEGER NOT NULL DEFAULT 0,
  renewed INTEGER NOT NULL DEFAULT 0,
  rootcert INTEGER NOT NULL DEFAULT 1,
  md TEXT NOT NULL DEFAULT 'sha512',
  type INTEGER DEFAULT NULL,
  description TEXT NOT NULL DEFAULT ''"""
    statements = []
    for table, extra in (
        ("emailcerts", "memid INTEGER NOT NULL DEFAULT 0, keytype TEXT NOT NULL DEFAULT 'NS', "
         "codesign INTEGER NOT NULL DEFAULT 0, disablelogin INTEGER NOT NULL DEFAULT 0,"),
        ("domaincerts", "domid INTEGER NOT NULL DEFAULT 0,"),
        ("orgemailcerts", "orgid INTEGER NOT NULL DEFAULT 0, keytype TEXT NOT NULL DEFAULT 'NS', "
         "codesign INTEGER NOT NULL DEFAULT 0, ou TEXT NOT NULL DEFAULT '',"),
        ("orgdomaincerts", "orgid INTEGER NOT NULL DEFAULT 0, ou TEXT NOT NULL DEFAULT '',"),
    ):
        statements.append(
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, {extra}{common})"
        )
        statements.append(f"CREATE INDEX {table}_crt_name ON {table} (crt_name)")
        statements.append(f"CREATE INDEX {table}_revoked ON {table} (revoked)")
        statements.append(f"CREATE INDEX {table}_serial ON {table} (serial)")
    statements += [
        """CREATE TABLE gpg (id INTEGER PRIMARY KEY AUTOINCREMENT,
  memid INTEGER NOT NULL DEFAULT 0, email TEXT NOT NULL DEFAULT '',
  level INTEGER NOT NULL DEFAULT 0, multiple INTEGER NOT NULL DEFAULT 0,
  expires INTEGER NOT NULL DEFAULT 0, csr TEXT NOT NULL DEFAULT '',
  crt TEXT NOT NULL DEFAULT '', issued TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  expire TEXT NOT NULL DEFAULT '0000-00-00 00:00:00', keyid TEXT DEFAULT NULL,
  warning INTEGER NOT NULL DEFAULT 0, description TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX gpg_memid ON gpg (memid)",
        """CREATE TABLE domains (id INTEGER PRIMARY KEY AUTOINCREMENT,
  memid INTEGER NOT NULL DEFAULT 0, domain TEXT NOT NULL DEFAULT '',
  created TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  modified TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  deleted TEXT NOT NULL DEFAULT '0000-00-00 00:00:00')""",
        """CREATE TABLE org (orgid INTEGER NOT NULL DEFAULT 0, memid INTEGER NOT NULL DEFAULT 0,
  OU TEXT NOT NULL DEFAULT '', masteracc INTEGER NOT NULL DEFAULT 0, comments TEXT,
  UNIQUE (orgid, memid))""",
        """CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT,
  email TEXT NOT NULL DEFAULT '', password TEXT NOT NULL DEFAULT '',
  fname TEXT NOT NULL DEFAULT '', mname TEXT NOT NULL DEFAULT '',
  lname TEXT NOT NULL DEFAULT '', language TEXT NOT NULL DEFAULT '',
  created TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  modified TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  deleted TEXT NOT NULL DEFAULT '0000-00-00 00:00:00')""",
        """CREATE TABLE notary (id INTEGER PRIMARY KEY AUTOINCREMENT,
  `from` INTEGER NOT NULL DEFAULT 0, `to` INTEGER NOT NULL DEFAULT 0,
  points INTEGER NOT NULL DEFAULT 0, awarded INTEGER NOT NULL DEFAULT 0,
  method TEXT NOT NULL DEFAULT 'Face to Face Meeting', `date` TEXT NOT NULL DEFAULT '',
  `when` TEXT NOT NULL DEFAULT '0000-00-00 00:00:00',
  deleted TEXT NOT NULL DEFAULT '0000-00-00 00:00:00')""",
        "CREATE INDEX notary_to ON notary (`to`)",
    ]
    return tuple(statements)


SQLITE_SCHEMA = _sqlite_schema()


def create_sqlite_webdb(path: Path | str) -> None:
    """Create an empty sqlite WebDB at ``path`` (which must not exist yet)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    connection = sqlite3.connect(path)
    try:
        for statement in SQLITE_SCHEMA:
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()
