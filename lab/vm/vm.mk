# The VM lab (lab/vm): three Debian 12 VMs under a libvirtd inside the `pghavm` network namespace (QEMU TCG),
# created and provisioned by `pulumi up` of the vmlab stack with the real engine and libvirt provider.
# Included by the Makefile (`include lab/vm/vm.mk`); needs root, `make engine` and `make setup`.
VM_NS := pghavm

# What `make test-vm-lab` runs with the VM back-end of the lab API (PGHA_LAB=vm): the VM-specific checks first, the
# HA drills the container lab runs too (a, b, d, e; any drill id of tests/ha works), destroy-leaves-nothing last.
VM_LAB_DRILLS ?= tests/ha/test_pool_nodes.py::test_a_pool_nodes tests/ha/test_watchdog.py::test_b_watchdog \
	tests/ha/test_failover.py::test_d_stop_postgresql_on_primary \
	tests/ha/test_failover.py::test_e_online_recovery_of_old_primary
VM_LAB_TESTS ?= tests/vm_lab/test_vm_infra.py $(VM_LAB_DRILLS) tests/vm_lab/test_vm_teardown.py

.PHONY: vm-lab-up vm-lab-down vm-lab-status test-vm-lab

vm-lab-up: setup engine ## VM lab: host packages, image + mirror (cached), libvirtd in its namespace, pulumi up (root)
	$(PY) -m lab.vm up

vm-lab-down: setup ## VM lab: pulumi destroy, then stop the daemons and remove the namespace (image cache kept)
	$(PY) -m lab.vm down

vm-lab-status: setup ## VM lab: namespace, daemons, domains, networks
	$(PY) -m lab.vm status

test-vm-lab: setup engine ## VM lab: fresh lab, its own checks + drills a b d e through the lab API, destroy; phase times
	$(PY) -m lab.vm test -- $(VM_LAB_TESTS)
