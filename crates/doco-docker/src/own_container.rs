//! Whether doco-cd itself runs in a container, and which one: Docker bind-mounts the container's
//! `hostname` file from `/var/lib/docker/containers/<64-hex id>/hostname` onto `/etc/hostname`, and
//! `/proc/self/mountinfo` shows that source. upstream finds its own id the same way, then inspects
//! its container to learn where the data volume lives on the host.

/// The id of the container this process runs in, from the text of `/proc/self/mountinfo`.
pub fn container_id_from_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter(|line| line.split_whitespace().nth(4) == Some("/etc/hostname"))
        .find_map(|line| line.split_whitespace().nth(3).and_then(container_id_in))
}

fn container_id_in(path: &str) -> Option<String> {
    path.split('/')
        .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// The id of the container this process runs in, or `None` outside a container.
pub fn own_container_id() -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| container_id_from_mountinfo(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_behind_etc_hostname() {
        // Captured in a container of this machine's engine (20.10, overlay on ext4).
        let mountinfo = "\
88 71 254:0 /tmp /data rw,relatime - ext4 /dev/vda rw,discard
89 71 254:0 /var/lib/docker/containers/77f7cfe36b335fc97897c86e529458654a4e96ee2320108e7574f22c496f2a3d/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw
90 71 254:0 /var/lib/docker/containers/77f7cfe36b335fc97897c86e529458654a4e96ee2320108e7574f22c496f2a3d/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw,discard
";
        assert_eq!(
            container_id_from_mountinfo(mountinfo).as_deref(),
            Some("77f7cfe36b335fc97897c86e529458654a4e96ee2320108e7574f22c496f2a3d")
        );
    }

    #[test]
    fn outside_a_container_there_is_no_id() {
        let host = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw
";
        assert_eq!(container_id_from_mountinfo(host), None);
        let short = "90 71 254:0 /var/lib/docker/containers/abc/hostname /etc/hostname rw - ext4 /dev/vda rw";
        assert_eq!(container_id_from_mountinfo(short), None);
    }
}
