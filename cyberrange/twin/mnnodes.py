"""Mininet's node and link objects over a twin built from named namespaces.

The twin is built with batches (``twin/build.py``), not by Mininet, but ``twin.net`` is an
ordinary ``mininet.net.Mininet`` holding these objects, so that someone who knows Mininet finds
what they expect: ``twin.net.hosts``, ``net.get('c3f9ah7')``, ``h.IP()``, ``h.intfList()``,
``h.cmd('ip -4 route')``, ``net.links``, even ``mininet.cli.CLI(twin.net)``.

A :class:`NetnsHost` has no shell until something asks for one: its first ``cmd``/``sendCmd``
starts Mininet's usual bash (prompt, pty, sentinel) inside the node's namespace. A twin of
5,000 nodes therefore costs no process per node, and a user who types ``h.cmd(...)`` still gets
Mininet's behaviour. ``popen`` needs no shell at all (``twin/netns.py``).
"""
from __future__ import annotations

import os
import pty
import select

import logging

# mininet.log sets a process-wide logger class when it is imported; every logger made later
# (Elasticsearch's among them) would be a MininetLogger and break. Keep the class as it was.
_LOGGER_CLASS = logging.getLoggerClass()
from mininet.link import Intf, Link  # noqa: E402
from mininet.net import Mininet  # noqa: E402, F401 - imported here, under the guard above
from mininet.node import Host, Switch  # noqa: E402

logging.setLoggerClass(_LOGGER_CLASS)

from cyberrange.twin import netns


class NetnsHost(Host):
    """A Mininet host living in the named namespace ``ns`` (its name, by default)."""

    def __init__(self, name, ns: str | None = None, **params):
        self.ns = ns or name
        params["inNamespace"] = True
        super().__init__(name, **params)

    def startShell(self, mnopts=None):               # noqa: N802 - Mininet's name
        """Nothing at creation: the shell starts on first use (:meth:`_shell`)."""
        self.shell = None

    def _shell(self):
        if self.shell is not None:
            return
        cmd = ["env", "PS1=" + chr(127), "bash", "--norc", "--noediting", "-is",
               "mininet:" + self.ns]     # the prefix in ps: teardown and leftovers find it
        self.master, self.slave = pty.openpty()
        self.shell = netns.popen(self.ns, cmd, stdin=self.slave, stdout=self.slave,
                                 stderr=self.slave, close_fds=False, start_new_session=True)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed, self.lastCmd, self.lastPid, self.readbuf = False, None, None, ""
        while True:
            data = self.read(1024)
            if data and data[-1] == chr(127):
                break
            self.pollOut.poll()
        self.waiting = False
        self.cmd("unset HISTFILE; stty -echo; set +m")

    def cmd(self, *args, **kwargs):
        self._shell()
        return super().cmd(*args, **kwargs)

    def sendCmd(self, *args, **kwargs):             # noqa: N802
        self._shell()
        return super().sendCmd(*args, **kwargs)

    def popen(self, *args, **kwargs):
        """Mininet's ``Node.popen`` (a list, a string or several arguments), without a shell
        or ``mnexec``: the program starts in the node's namespace directly."""
        kwargs.setdefault("mncmd", [])
        return super().popen(*args, **kwargs)

    def _popen(self, cmd, **params):
        params.setdefault("start_new_session", True)
        return netns.popen(self.ns, list(cmd), **params)

    def addIntf(self, intf, port=None, moveIntfFn=None):   # noqa: N802
        """The interface was made inside the namespace already: nothing to move."""
        return super().addIntf(intf, port=port, moveIntfFn=lambda *a, **k: True)

    def terminate(self):
        if self.shell is not None:
            super().terminate()


class NetnsSwitch(Switch):
    """A Linux bridge in the twin's switch namespace; made and removed by the twin's batches."""

    def __init__(self, name, bridge: str, ns: str, **params):
        self.bridge, self.ns = bridge, ns
        params["inNamespace"] = False
        super().__init__(name, **params)

    def startShell(self, mnopts=None):               # noqa: N802
        self.shell = None

    def addIntf(self, intf, port=None, moveIntfFn=None):   # noqa: N802
        return super().addIntf(intf, port=port, moveIntfFn=lambda *a, **k: True)

    def start(self, controllers):
        pass

    def stop(self, deleteIntfs=True):               # noqa: N803
        pass

    def terminate(self):
        pass


class PrebuiltLink(Link):
    """A link whose veth pair the twin's batch already made."""

    def makeIntfPair(self, *args, **kwargs):        # noqa: N802
        return None

    def delete(self):
        pass


class QuietIntf(Intf):
    """An interface the twin configured itself (addresses, MAC, state)."""

    def config(self, **params):
        return {}

    def delete(self):
        pass
