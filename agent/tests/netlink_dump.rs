//! Netlink parsing on recorded bytes, as data: `fixtures/netlink/*.bin` are
//! the kernel's replies to RTM_GETLINK and RTM_GETADDR dumps in a namespace
//! made by `fixtures/netlink/capture.sh` (Linux 6.18).

use meshtable_agent::collect::netlink::{
    Dump, NetlinkError, address_from_message, format_mac, link_from_message, parse_dump, primary,
};
use meshtable_proto::InterfaceKind as K;
use netlink_packet_route::RouteNetlinkMessage;

/// (index, name, kind, MAC, MTU, IFLA_LINKINFO kind)
type Row<'a> = (u32, &'a str, K, Option<String>, u32, Option<&'a str>);

fn fixture(name: &str) -> Dump {
    let path = format!(
        "{}/tests/fixtures/netlink/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(path).unwrap();
    let mut dump = Dump::default();
    parse_dump(&bytes, &mut dump).unwrap();
    assert!(dump.done && !dump.interrupted, "{name}: complete dump");
    assert!(dump.skipped.is_empty(), "{:?}", dump.skipped);
    dump
}

#[test]
fn links_from_a_recorded_dump() {
    let dump = fixture("getlink.bin");
    let links: Vec<_> = dump
        .messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => link_from_message(l, &|_| false),
            _ => None,
        })
        .collect();
    let want = [
        (1, "lo", K::Loopback, None, 65536, None),
        (
            2,
            "vb",
            K::Virtual,
            Some("02:00:5e:10:00:0b"),
            1500,
            Some("veth"),
        ),
        (
            3,
            "va",
            K::Virtual,
            Some("02:00:5e:10:00:0a"),
            1500,
            Some("veth"),
        ),
        (
            4,
            "br-lan",
            K::Bridge,
            Some("02:00:5e:10:00:01"),
            1500,
            Some("bridge"),
        ),
        (5, "tun0", K::Tunnel, None, 1500, Some("tun")),
        (
            6,
            "tap0",
            K::Tunnel,
            Some("02:00:5e:10:00:7a"),
            1406,
            Some("tun"),
        ),
        (
            7,
            "ifb0",
            K::Virtual,
            Some("02:00:5e:10:00:f0"),
            1500,
            Some("ifb"),
        ),
    ];
    let got: Vec<Row<'_>> = links
        .iter()
        .map(|l| {
            (
                l.index,
                l.name.as_str(),
                l.kind,
                l.mac.as_ref().map(format_mac),
                l.mtu,
                l.link_kind.as_deref(),
            )
        })
        .collect();
    let want: Vec<Row<'_>> = want
        .into_iter()
        .map(|(i, n, k, m, mtu, lk)| (i, n, k, m.map(str::to_owned), mtu, lk))
        .collect();
    assert_eq!(got, want);
    // Every interface is down: the counters are the kernel's zeros, named.
    for l in &links {
        assert_eq!(l.counters.name, l.name);
        assert_eq!((l.counters.rx_bytes, l.counters.tx_packets), (0, 0));
    }
    // No hardware interface: the node id comes from the lowest ifindex with a MAC.
    assert_eq!(primary(&links).map(|l| l.name.as_str()), Some("vb"));
    // A wireless probe turns an Ethernet-like device into a radio.
    let radio = dump.messages.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => {
            link_from_message(l, &|name| name == "tap0").filter(|l| l.name == "tap0")
        }
        _ => None,
    });
    assert_eq!(radio.map(|l| l.kind), Some(K::Wireless));
}

#[test]
fn addresses_from_a_recorded_dump() {
    let dump = fixture("getaddr.bin");
    let mut got: Vec<(u32, String)> = dump
        .messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => address_from_message(a),
            _ => None,
        })
        .map(|a| (a.index, a.cidr))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (4, "198.51.100.1/25".to_owned()),
            (4, "2001:db8::1/64".to_owned()),
            // point-to-point: the local address, not the peer
            (5, "192.0.2.1/32".to_owned()),
        ]
    );
}

#[test]
fn kernel_errors_and_garbage_are_errors() {
    // NLMSG_ERROR carrying -EPERM, then the request's header.
    let mut error = Vec::new();
    error.extend_from_slice(&36u32.to_ne_bytes()); // length
    error.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
    error.extend_from_slice(&0u16.to_ne_bytes());
    error.extend_from_slice(&1u32.to_ne_bytes());
    error.extend_from_slice(&0u32.to_ne_bytes());
    error.extend_from_slice(&(-1i32).to_ne_bytes()); // -EPERM
    error.extend_from_slice(&[0; 16]);
    let e = parse_dump(&error, &mut Dump::default()).unwrap_err();
    assert!(
        matches!(&e, NetlinkError::Kernel(io) if io.raw_os_error() == Some(1)),
        "{e}"
    );

    let link = std::fs::read(format!(
        "{}/tests/fixtures/netlink/getlink.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for bad in [&link[..10], &[0xff; 20][..], &[0; 16][..]] {
        assert!(matches!(
            parse_dump(bad, &mut Dump::default()),
            Err(NetlinkError::Malformed(_))
        ));
    }
}
