"""The fleet control loop shared by every face: ``FleetDriver`` (hosted by the simulator and the gateway)."""

from polyserve.control.driver import DecisionLog, DriverHost, DriverOptions, FleetDriver, HostBase

__all__ = ["DecisionLog", "DriverHost", "DriverOptions", "FleetDriver", "HostBase"]
