"""Bringing the platform up: the install plan (:mod:`.plan`, :mod:`.phases`), the pinned charts
and their render check (:mod:`.charts`, :mod:`.contract`), preflight (:mod:`.doctor`), tool
installs (:mod:`.toolinstall`), cluster providers (:mod:`.providers`) and the phase installer
(:mod:`.install`); :mod:`.app` is what the cluster tasks call."""
