//! The two tags every resource carries, in each service's own tag type.

pub const CLUSTER_TAG: &str = "neonctl-aws/cluster";
pub const COMPONENT_TAG: &str = "neonctl-aws/component";

/// Tags of one resource: `neonctl-aws/cluster=<prefix>`, `neonctl-aws/component=<component>`
/// and a `Name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    pub prefix: String,
    pub component: String,
}

impl Tags {
    pub fn new(prefix: &str, component: &str) -> Self {
        Self { prefix: prefix.to_string(), component: component.to_string() }
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.prefix, self.component)
    }

    pub fn pairs(&self) -> [(String, String); 3] {
        [
            (CLUSTER_TAG.to_string(), self.prefix.clone()),
            (COMPONENT_TAG.to_string(), self.component.clone()),
            ("Name".to_string(), self.name()),
        ]
    }

    pub fn map(&self) -> std::collections::HashMap<String, String> {
        self.pairs().into_iter().collect()
    }

    pub fn ec2(&self, resource: aws_sdk_ec2::types::ResourceType) -> aws_sdk_ec2::types::TagSpecification {
        self.ec2_with(resource, &[])
    }

    /// The EC2 tags plus `extra` ones (such as the load balancer role of a subnet).
    pub fn ec2_with(&self, resource: aws_sdk_ec2::types::ResourceType, extra: &[(&str, &str)]) -> aws_sdk_ec2::types::TagSpecification {
        let extra = extra.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let tags = self.pairs().into_iter().chain(extra).map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
        aws_sdk_ec2::types::TagSpecification::builder().resource_type(resource).set_tags(Some(tags.collect())).build()
    }

    pub fn iam(&self) -> Vec<aws_sdk_iam::types::Tag> {
        self.pairs()
            .into_iter()
            .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().expect("key and value set"))
            .collect()
    }

    pub fn ecr(&self) -> Vec<aws_sdk_ecr::types::Tag> {
        self.pairs()
            .into_iter()
            .map(|(k, v)| aws_sdk_ecr::types::Tag::builder().key(k).value(v).build().expect("key and value set"))
            .collect()
    }

    pub fn s3(&self) -> aws_sdk_s3::types::Tagging {
        let tags =
            self.pairs().into_iter().map(|(k, v)| aws_sdk_s3::types::Tag::builder().key(k).value(v).build().expect("key and value set"));
        aws_sdk_s3::types::Tagging::builder().set_tag_set(Some(tags.collect())).build().expect("tag set")
    }
}

/// The EC2 filter that finds everything of one prefix.
pub fn ec2_filter(prefix: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder().name(format!("tag:{CLUSTER_TAG}")).values(prefix).build()
}

/// The value of `key` among EC2 tags.
pub fn ec2_value<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// Whether `pairs` (any service's tags as key/value) mark the resource as this prefix's.
pub fn is_ours<'a>(mut pairs: impl Iterator<Item = (&'a str, &'a str)>, prefix: &str) -> bool {
    pairs.any(|(k, v)| k == CLUSTER_TAG && v == prefix)
}
