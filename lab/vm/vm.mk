# The VM lab (lab/vm): three Debian 12 VMs under a libvirtd inside the `pghavm` network namespace (QEMU TCG),
# created and provisioned by `pulumi up` of the vmlab stack with the real engine and libvirt provider.
# Included by the Makefile (`include lab/vm/vm.mk`); needs root, `make engine` and `make setup`.
VM_NS := pghavm

.PHONY: vm-lab-up vm-lab-down vm-lab-status test-vm-lab

vm-lab-up: setup engine ## VM lab: host packages, image + mirror (cached), libvirtd in its namespace, pulumi up (root)
	$(PY) -m lab.vm up

vm-lab-down: setup ## VM lab: pulumi destroy, then stop the daemons and remove the namespace (image cache kept)
	$(PY) -m lab.vm down

vm-lab-status: setup ## VM lab: namespace, daemons, domains, networks
	$(PY) -m lab.vm status

test-vm-lab: setup engine ## VM lab checks: enp0s8, pool_nodes, VIP, failover, online recovery, destroy (prints phase times)
	VM_LAB_TESTS=1 .venv/bin/pytest -q -s -p no:cacheprovider tests/vm_lab
