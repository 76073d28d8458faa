"""The local sandbox: loopback emulators of the Mixpanel export API and of AEP."""
