//! Identity values (`cilium/state/identities/v1/id/<id>`): not JSON but the identity's
//! labels as Cilium's sorted label string, `source:key=value;` per label.

use bytes::Bytes;

use super::CodecError;
use crate::model::{Cluster, Identity, IdentityId, Labels};

/// An identity's labels as Cilium's label string.
pub fn encode_identity(identity: &Identity) -> Bytes {
    Bytes::from(identity.labels().to_kvstore_string())
}

/// Decodes the label string stored under identity `id` and checks the identity against
/// the cluster that claims it (id range, cluster label).
pub fn decode_identity(
    id: IdentityId,
    bytes: &[u8],
    cluster: &Cluster,
) -> Result<Identity, CodecError> {
    let text = std::str::from_utf8(bytes).map_err(|source| CodecError::Utf8 {
        what: "identity labels",
        source,
    })?;
    let labels =
        Labels::parse_kvstore_string(text).map_err(CodecError::model("identity labels"))?;
    Identity::new(cluster, id, labels).map_err(CodecError::model("identity"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterId, ClusterName, IdMode, ModelError};

    /// The example of the reference, §1.4 (from Cilium's `ciliumidentitites.txtar`).
    const REFERENCE: &str = "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=bar;";

    fn mk_cluster(name: &str, id: u32) -> Cluster {
        Cluster::new(
            ClusterName::new(name).unwrap(),
            ClusterId::new(id, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    fn id(n: u32) -> IdentityId {
        IdentityId::new(n).unwrap()
    }

    #[test]
    fn reference_identity_decodes_and_re_encodes_exactly() {
        let identity = decode_identity(
            id(196_915),
            REFERENCE.as_bytes(),
            &mk_cluster("cluster3", 3),
        )
        .unwrap();
        assert_eq!(identity.id(), id(196_915));
        assert_eq!(identity.labels().len(), 3);
        assert_eq!(identity.labels().cluster(), Some("cluster3"));
        assert_eq!(identity.labels().get("app").unwrap().value, "baz");
        assert_eq!(encode_identity(&identity), REFERENCE.as_bytes());
    }

    #[test]
    fn unsorted_labels_are_written_sorted() {
        let unsorted = "k8s:io.kubernetes.pod.namespace=bar;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:app=baz;";
        let identity =
            decode_identity(id(196_915), unsorted.as_bytes(), &mk_cluster("cluster3", 3)).unwrap();
        assert_eq!(encode_identity(&identity), REFERENCE.as_bytes());
    }

    #[test]
    fn invalid_identities_are_refused() {
        let c3 = mk_cluster("cluster3", 3);
        let err = |id: IdentityId, s: &[u8], c: &Cluster| decode_identity(id, s, c).unwrap_err();
        assert!(matches!(
            err(id(196_915), b"k8s:app=baz;nosource;", &c3),
            CodecError::Model {
                what: "identity labels",
                source: ModelError::Label { .. }
            }
        ));
        assert!(matches!(
            err(id(196_915), b"k8s:app=\xff;", &c3),
            CodecError::Utf8 { .. }
        ));
        assert!(matches!(
            err(id(65_600), REFERENCE.as_bytes(), &c3),
            CodecError::Model {
                what: "identity",
                source: ModelError::IdentityOutOfRange { .. }
            }
        ));
        assert!(matches!(
            err(
                id(196_915),
                REFERENCE.as_bytes(),
                &mk_cluster("cluster4", 3)
            ),
            CodecError::Model {
                source: ModelError::WrongClusterLabel { .. },
                ..
            }
        ));
        assert!(matches!(
            err(id(196_915), b"", &c3),
            CodecError::Model {
                source: ModelError::MissingClusterLabel { .. },
                ..
            }
        ));
    }
}
