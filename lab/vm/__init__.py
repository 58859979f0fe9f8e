"""The VM lab: three Debian 12 VMs under a libvirtd that runs inside a network namespace of ours (QEMU TCG).

`pulumi up` of the `vmlab` stack (Pulumi.vmlab.yaml) creates the networks, volumes, cloud-init disks and domains
with the real libvirt provider, then provisions them with packages from a local mirror served in the namespace.
"""
