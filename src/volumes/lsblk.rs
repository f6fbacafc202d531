//! `lsblk -b -n -P -o NAME,TYPE,FSTYPE,MOUNTPOINT,LABEL,UUID,MODEL,SIZE,MAJ:MIN`, the exact command ADE lists block
//! devices with (ADE 1.4.0.12 `DiskUtil.py:1012-1014`, the same in dual pass `DiskUtil.py:1170-1172`), parsed.
//! These flags exist in RHEL 7's util-linux 2.23 and in Ubuntu 16.04's 2.27 (`-P` pairs, not `-J`, which 2.23 lacks).
//! A leaf parser: it must not run anything (the caller gives it the output).

/// The columns ADE asks for, in its order.
pub const COLUMNS: &str = "NAME,TYPE,FSTYPE,MOUNTPOINT,LABEL,UUID,MODEL,SIZE,MAJ:MIN";

/// ADE's argv: every device, or `dev` and the devices below it.
pub fn argv(dev: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = ["lsblk", "-b", "-n", "-P", "-o", COLUMNS].iter().map(|s| s.to_string()).collect();
    v.extend(dev.map(String::from));
    v
}

/// One line of lsblk's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkItem {
    /// Kernel or mapper name (`sdc1`, `rootvg-datalv`).
    pub name: String,
    /// `disk`, `part`, `lvm`, `crypt`, `raid1`, `loop`, `rom`, ...
    pub kind: String,
    pub fstype: String,
    pub mountpoint: String,
    pub label: String,
    pub uuid: String,
    pub model: String,
    /// Bytes (`-b`).
    pub size: u64,
    /// (major, minor).
    pub majmin: (u32, u32),
}

/// Splits `KEY="value" KEY="value"` into pairs; values are unescaped (`\xHH`). None when the line is not pairs.
fn pairs(line: &str) -> Option<Vec<(String, String)>> {
    let mut out = vec![];
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        let end = after.find('"')?;
        out.push((key.to_string(), unescape(&after[..end])));
        rest = after[end + 1..].trim_start();
    }
    Some(out)
}

/// Undoes lsblk's `\xHH` escapes (util-linux escapes `"`, `\`, and unprintable bytes inside `-P` values).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], b.get(i + 1), hex) {
            (b'\\', Some(b'x'), Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses lsblk's output; `what` names the command in errors. A line that is not `KEY="value"` pairs, or lacks
/// NAME, SIZE or MAJ:MIN, is an error naming the command and the line number.
pub fn parse(text: &str, what: &str) -> Result<Vec<BlkItem>, String> {
    let mut items = vec![];
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: &str| format!("{what}: line {}: {why}: {:?}", n + 1, line);
        let kv = pairs(line).ok_or_else(|| bad("not KEY=\"value\" pairs"))?;
        let mut it = BlkItem::default();
        let (mut size, mut majmin) = (None, None);
        for (k, v) in kv {
            match k.as_str() {
                "NAME" => it.name = v,
                "TYPE" => it.kind = v,
                "FSTYPE" => it.fstype = v,
                "MOUNTPOINT" => it.mountpoint = v,
                "LABEL" => it.label = v,
                "UUID" => it.uuid = v,
                "MODEL" => it.model = v.trim().to_string(),
                "SIZE" => size = Some(v.trim().parse::<u64>().map_err(|_| bad("SIZE is not a number of bytes"))?),
                // util-linux 2.37 and later print MAJ_MIN (a shell-safe name); ADE 1.4.0.12 reads both
                // (DiskUtil.py:1051), dual pass only MAJ:MIN (DiskUtil.py:1209).
                "MAJ:MIN" | "MAJ_MIN" => {
                    majmin = v.trim().split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                    if majmin.is_none() {
                        return Err(bad("MAJ:MIN is not major:minor"));
                    }
                }
                _ => {}
            }
        }
        if it.name.is_empty() {
            return Err(bad("no NAME"));
        }
        it.size = size.ok_or_else(|| bad("no SIZE"))?;
        it.majmin = majmin.ok_or_else(|| bad("no MAJ:MIN"))?;
        items.push(it);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/volumes/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn argv_is_ades_command_with_flags_util_linux_2_23_has() {
        assert_eq!(
            argv(Some("/dev/sdc")).join(" "),
            "lsblk -b -n -P -o NAME,TYPE,FSTYPE,MOUNTPOINT,LABEL,UUID,MODEL,SIZE,MAJ:MIN /dev/sdc"
        );
        assert!(!argv(None).contains(&"-J".to_string()));
    }

    #[test]
    fn rhel7_output_parses() {
        let items = parse(&fixture("rhel7-gen1/lsblk.txt"), "lsblk").unwrap();
        let sdc1 = items.iter().find(|i| i.name == "sdc1").unwrap();
        assert_eq!(sdc1.kind, "part");
        assert_eq!(sdc1.fstype, "ext4");
        assert_eq!(sdc1.mountpoint, "/data");
        assert_eq!(sdc1.size, 10736352768);
        assert_eq!(sdc1.majmin, (8, 33));
        // MODEL "Virtual Disk" keeps its space (ADE's own split on blanks cuts it: DiskUtil.py:1025)
        assert_eq!(items.iter().find(|i| i.name == "sda").unwrap().model, "Virtual Disk");
    }

    #[test]
    fn maj_min_with_an_underscore_is_read_too() {
        // (util-linux 2.38 still prints MAJ:MIN for -P; ADE reads both spellings, DiskUtil.py:1051)
        let line =
            r#"NAME="sdc1" TYPE="part" FSTYPE="ext4" MOUNTPOINT="" LABEL="" UUID="u" MODEL="" SIZE="1" MAJ_MIN="8:33""#;
        assert_eq!(parse(line, "lsblk").unwrap()[0].majmin, (8, 33));
        let items = parse(&fixture("ubuntu2204-gen2/lsblk.txt"), "lsblk").unwrap();
        assert_eq!(items.iter().find(|i| i.name == "datavg-lv").unwrap().majmin, (253, 0));
    }

    #[test]
    fn escapes_are_undone() {
        let items = parse(
            r#"NAME="sdd1" TYPE="part" FSTYPE="ext4" MOUNTPOINT="/data\x20x" LABEL="" UUID="u" MODEL="" SIZE="1" MAJ:MIN="8:49""#,
            "lsblk",
        )
        .unwrap();
        assert_eq!(items[0].mountpoint, "/data x");
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse("NAME=\"sda\" SIZE=\"1\" MAJ:MIN=\"8:0\"\nsda disk 30G\n", "lsblk -P").unwrap_err();
        assert_eq!(e, "lsblk -P: line 2: not KEY=\"value\" pairs: \"sda disk 30G\"");
        let e = parse("NAME=\"sda\" SIZE=\"30G\" MAJ:MIN=\"8:0\"", "lsblk").unwrap_err();
        assert!(e.starts_with("lsblk: line 1: SIZE is not a number of bytes"), "{e}");
        let e = parse("NAME=\"sda\" SIZE=\"3\"", "lsblk").unwrap_err();
        assert!(e.starts_with("lsblk: line 1: no MAJ:MIN"), "{e}");
    }
}
