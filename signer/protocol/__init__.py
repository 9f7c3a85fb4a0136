"""Everything about bytes: the wire codec, the link state machines, the Twisted adapters."""
