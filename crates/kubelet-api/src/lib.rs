//! The kubelet's device plugin API (v1beta1) and PodResources API (v1) as gRPC
//! schema, so nfhost can be a Kubernetes device plugin: register its VFs as an
//! extended resource, serve `ListAndWatch`/`Allocate`, and ask the kubelet which
//! pods hold which devices.
//!
//! The protobuf files under `proto/k8s/` were written for nfhost from the
//! published k8s.io/kubelet API and keep its package, service, message and field
//! names and field numbers, so a real kubelet interoperates. Both the server and
//! the client side of every service are generated (protox and tonic's prost code
//! generator, at build time; no `protoc`). No transport is chosen
//! (`build_transport(false)`): a server or client brings its own, for the kubelet
//! a Unix socket.
//!
//! - [`deviceplugin`]: proto package `v1beta1`. The kubelet serves
//!   [`Registration`](deviceplugin::registration_server::Registration) on
//!   [`KUBELET_SOCKET`]; a plugin serves
//!   [`DevicePlugin`](deviceplugin::device_plugin_server::DevicePlugin) on its
//!   own socket in [`DEFAULT_DEVICE_PLUGIN_DIR`].
//! - [`podresources`]: proto package `v1`. The kubelet serves
//!   [`PodResourcesLister`](podresources::pod_resources_lister_server::PodResourcesLister)
//!   on [`DEFAULT_POD_RESOURCES_SOCKET`].
//!
//! Both packages define `TopologyInfo` and `NUMANode` (`NumaNode` in Rust); they
//! are distinct types, one per module.
#![forbid(unsafe_code)]

/// The device plugin API, proto package `v1beta1`
/// (`proto/k8s/deviceplugin/v1beta1/api.proto`): the `Registration` service the
/// kubelet serves and the `DevicePlugin` service a plugin serves, with their
/// messages.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod deviceplugin {
    include!(concat!(env!("OUT_DIR"), "/v1beta1.rs"));
}

/// The PodResources API, proto package `v1` (`proto/k8s/podresources/v1/api.proto`):
/// the `PodResourcesLister` service the kubelet serves, with its messages.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod podresources {
    include!(concat!(env!("OUT_DIR"), "/v1.rs"));
}

/// The device plugin API version nfhost implements; sent as
/// [`RegisterRequest::version`](deviceplugin::RegisterRequest::version).
pub const VERSION: &str = "v1beta1";

/// File name of the kubelet's registration socket (it serves `Registration`),
/// inside [`DEFAULT_DEVICE_PLUGIN_DIR`].
pub const KUBELET_SOCKET: &str = "kubelet.sock";

/// [`Device::health`](deviceplugin::Device::health) of a device that can be
/// allocated.
pub const HEALTHY: &str = "Healthy";

/// [`Device::health`](deviceplugin::Device::health) of a device that must not be
/// allocated.
pub const UNHEALTHY: &str = "Unhealthy";

/// Directory holding the kubelet's registration socket and the plugins' sockets
/// (a plugin's [`RegisterRequest::endpoint`](deviceplugin::RegisterRequest::endpoint)
/// is a file name in it).
pub const DEFAULT_DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// The kubelet's default PodResources socket (it serves `PodResourcesLister`).
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

#[cfg(test)]
mod tests {
    //! Wire-format pins. Every expected byte string is derived by hand from the
    //! field numbers of the kubelet's published API (a field's key is
    //! `field_number << 3 | wire_type`; wire type 0 is a varint, 2 a
    //! length-delimited string, message, map entry or packed list), so a changed
    //! field number or type fails here.

    use std::collections::HashMap;

    use prost::Message;

    use super::{deviceplugin as dp, podresources as pr};

    #[test]
    fn register_request_wire_format() {
        let req = dp::RegisterRequest {
            version: super::VERSION.to_owned(),
            endpoint: "nfhost.sock".to_owned(),
            resource_name: "nfhost.io/vf".to_owned(),
            options: Some(dp::DevicePluginOptions {
                pre_start_required: true,
                get_preferred_allocation_available: true,
            }),
        };
        let expected = [
            // 1: version (1 << 3 | 2), 7 bytes
            &[0x0a, 0x07][..],
            b"v1beta1",
            // 2: endpoint (2 << 3 | 2), 11 bytes
            &[0x12, 0x0b],
            b"nfhost.sock",
            // 3: resource_name (3 << 3 | 2), 12 bytes
            &[0x1a, 0x0c],
            b"nfhost.io/vf",
            // 4: options (4 << 3 | 2), 4 bytes: pre_start_required (1 << 3 | 0) = 1,
            // get_preferred_allocation_available (2 << 3 | 0) = 1
            &[0x22, 0x04, 0x08, 0x01, 0x10, 0x01],
        ]
        .concat();
        assert_eq!(req.encode_to_vec(), expected);
        assert_eq!(dp::RegisterRequest::decode(&expected[..]).unwrap(), req);
    }

    #[test]
    fn container_allocate_response_wire_format() {
        let resp = dp::ContainerAllocateResponse {
            envs: HashMap::from([("NFHOST_VF".to_owned(), "0000:3b:02.1".to_owned())]),
            mounts: vec![dp::Mount {
                container_path: "/dev/vfio".to_owned(),
                host_path: "/dev/vfio".to_owned(),
                read_only: true,
            }],
            devices: vec![dp::DeviceSpec {
                container_path: "/dev/vfio/42".to_owned(),
                host_path: "/dev/vfio/42".to_owned(),
                permissions: "rw".to_owned(),
            }],
            annotations: HashMap::from([("nfhost.io/vf".to_owned(), "vf3".to_owned())]),
            cdi_devices: vec![dp::CdiDevice {
                name: "nfhost.io/vf=vf3".to_owned(),
            }],
        };
        let expected = [
            // 1: envs entry (1 << 3 | 2), 25 bytes: key (1 << 3 | 2) 9 bytes,
            // value (2 << 3 | 2) 12 bytes
            &[0x0a, 0x19, 0x0a, 0x09][..],
            b"NFHOST_VF",
            &[0x12, 0x0c],
            b"0000:3b:02.1",
            // 2: mounts (2 << 3 | 2), 24 bytes: container_path (1), host_path (2),
            // read_only (3 << 3 | 0) = 1
            &[0x12, 0x18, 0x0a, 0x09],
            b"/dev/vfio",
            &[0x12, 0x09],
            b"/dev/vfio",
            &[0x18, 0x01],
            // 3: devices (3 << 3 | 2), 32 bytes: container_path (1), host_path (2),
            // permissions (3 << 3 | 2)
            &[0x1a, 0x20, 0x0a, 0x0c],
            b"/dev/vfio/42",
            &[0x12, 0x0c],
            b"/dev/vfio/42",
            &[0x1a, 0x02],
            b"rw",
            // 4: annotations entry (4 << 3 | 2), 19 bytes: key 12 bytes, value 3
            &[0x22, 0x13, 0x0a, 0x0c],
            b"nfhost.io/vf",
            &[0x12, 0x03],
            b"vf3",
            // 5: cdi_devices (5 << 3 | 2), 18 bytes: name (1 << 3 | 2) 16 bytes
            &[0x2a, 0x12, 0x0a, 0x10],
            b"nfhost.io/vf=vf3",
        ]
        .concat();
        assert_eq!(resp.encode_to_vec(), expected);
        assert_eq!(
            dp::ContainerAllocateResponse::decode(&expected[..]).unwrap(),
            resp
        );
    }

    #[test]
    fn list_and_watch_response_wire_format() {
        let resp = dp::ListAndWatchResponse {
            devices: vec![dp::Device {
                id: "vf0".to_owned(),
                health: super::HEALTHY.to_owned(),
                topology: Some(dp::TopologyInfo {
                    nodes: vec![dp::NumaNode { id: 1 }],
                }),
            }],
        };
        let expected = [
            // 1: devices (1 << 3 | 2), 20 bytes: ID (1 << 3 | 2) 3 bytes,
            // health (2 << 3 | 2) 7 bytes, topology (3 << 3 | 2) 4 bytes holding
            // nodes (1 << 3 | 2) 2 bytes holding ID (1 << 3 | 0) = 1
            &[0x0a, 0x14, 0x0a, 0x03][..],
            b"vf0",
            &[0x12, 0x07],
            b"Healthy",
            &[0x1a, 0x04, 0x0a, 0x02, 0x08, 0x01],
        ]
        .concat();
        assert_eq!(resp.encode_to_vec(), expected);
        assert_eq!(
            dp::ListAndWatchResponse::decode(&expected[..]).unwrap(),
            resp
        );
    }

    #[test]
    fn preferred_allocation_request_wire_format() {
        let req = dp::ContainerPreferredAllocationRequest {
            available_device_i_ds: vec!["a".to_owned(), "b".to_owned()],
            must_include_device_i_ds: vec!["b".to_owned()],
            allocation_size: 1,
        };
        let expected: &[u8] = &[
            0x0a, 0x01, b'a', 0x0a, 0x01, b'b', // 1: available_deviceIDs, twice
            0x12, 0x01, b'b', // 2: must_include_deviceIDs
            0x18, 0x01, // 3: allocation_size (3 << 3 | 0) = 1
        ];
        assert_eq!(req.encode_to_vec(), expected);
    }

    #[test]
    fn pod_resources_container_devices_wire_format() {
        let devices = pr::ContainerDevices {
            resource_name: "nfhost.io/vf".to_owned(),
            device_ids: vec!["vf0".to_owned(), "vf1".to_owned()],
            topology: Some(pr::TopologyInfo {
                nodes: vec![pr::NumaNode { id: 1 }],
            }),
        };
        let expected = [
            // 1: resource_name (1 << 3 | 2), 12 bytes
            &[0x0a, 0x0c][..],
            b"nfhost.io/vf",
            // 2: device_ids (2 << 3 | 2), one key per element
            &[0x12, 0x03],
            b"vf0",
            &[0x12, 0x03],
            b"vf1",
            // 3: topology (3 << 3 | 2), 4 bytes: nodes (1 << 3 | 2) 2 bytes holding
            // ID (1 << 3 | 0) = 1
            &[0x1a, 0x04, 0x0a, 0x02, 0x08, 0x01],
        ]
        .concat();
        assert_eq!(devices.encode_to_vec(), expected);
        assert_eq!(
            pr::ContainerDevices::decode(&expected[..]).unwrap(),
            devices
        );
    }

    #[test]
    fn pod_resources_container_resources_wire_format() {
        let container = pr::ContainerResources {
            name: "nf".to_owned(),
            devices: Vec::new(),
            cpu_ids: vec![2, 3],
            memory: vec![pr::ContainerMemory {
                memory_type: "memory".to_owned(),
                size: 1,
                topology: None,
            }],
            dynamic_resources: vec![pr::DynamicResource {
                claim_name: "c".to_owned(),
                claim_namespace: "ns".to_owned(),
                claim_resources: vec![pr::ClaimResource {
                    cdi_devices: Vec::new(),
                    driver_name: "d".to_owned(),
                    pool_name: "p".to_owned(),
                    device_name: "x".to_owned(),
                    share_id: Some("s".to_owned()),
                }],
            }],
        };
        let expected = [
            // 1: name (1 << 3 | 2)
            &[0x0a, 0x02][..],
            b"nf",
            // 3: cpu_ids, packed (3 << 3 | 2), 2 bytes of varints
            &[0x1a, 0x02, 0x02, 0x03],
            // 4: memory (4 << 3 | 2), 10 bytes: memory_type (1 << 3 | 2) 6 bytes,
            // size (2 << 3 | 0) = 1
            &[0x22, 0x0a, 0x0a, 0x06],
            b"memory",
            &[0x10, 0x01],
            // 5: dynamic_resources (5 << 3 | 2), 21 bytes: claim_name (2 << 3 | 2),
            // claim_namespace (3 << 3 | 2), claim_resources (4 << 3 | 2) 12 bytes:
            // driver_name (2), pool_name (3), device_name (4), share_id (5)
            &[0x2a, 0x15, 0x12, 0x01, b'c', 0x1a, 0x02],
            b"ns",
            &[0x22, 0x0c],
            &[
                0x12, 0x01, b'd', 0x1a, 0x01, b'p', 0x22, 0x01, b'x', 0x2a, 0x01, b's',
            ],
        ]
        .concat();
        assert_eq!(container.encode_to_vec(), expected);
        assert_eq!(
            pr::ContainerResources::decode(&expected[..]).unwrap(),
            container
        );
    }

    #[test]
    fn pod_resources_pod_level_fields() {
        // Newer kubelets add pod-level cpu_ids (4) and memory (5) to PodResources.
        let pod = pr::PodResources {
            name: "p".to_owned(),
            namespace: "n".to_owned(),
            containers: Vec::new(),
            cpu_ids: vec![7],
            memory: Vec::new(),
        };
        let expected: &[u8] = &[
            0x0a, 0x01, b'p', // 1: name
            0x12, 0x01, b'n', // 2: namespace
            0x22, 0x01, 0x07, // 4: cpu_ids, packed
        ];
        assert_eq!(pod.encode_to_vec(), expected);
    }

    #[test]
    fn grpc_service_names() {
        assert_eq!(
            dp::registration_server::SERVICE_NAME,
            "v1beta1.Registration"
        );
        assert_eq!(
            dp::device_plugin_server::SERVICE_NAME,
            "v1beta1.DevicePlugin"
        );
        assert_eq!(
            pr::pod_resources_lister_server::SERVICE_NAME,
            "v1.PodResourcesLister"
        );
    }

    #[test]
    fn paths() {
        let kubelet =
            std::path::Path::new(super::DEFAULT_DEVICE_PLUGIN_DIR).join(super::KUBELET_SOCKET);
        assert_eq!(
            kubelet.to_str(),
            Some("/var/lib/kubelet/device-plugins/kubelet.sock")
        );
    }
}
