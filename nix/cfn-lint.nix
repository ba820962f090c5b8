# cfn-lint on the CloudFormation template `wheelhouse-deploy template` writes: the README's
# example settings, and two variants that switch the optional parts off and on, as
# tests/template.rs lints them. The settings give vpc_id and vpc_cidr, so no AWS call is made.
{ pkgs, tools, wheelhouse-deploy }:
let
  env = {
    nativeBuildInputs = [ tools.cfn-lint ];
  };

  script = ''
    export HOME=$TMPDIR
    cat > wheelhouse.example.toml <<'EOF'
    instance_type = "t3.small"
    asg_subnets = ["subnet-0a1b2c3d", "subnet-1a2b3c4d"]
    lb_subnets = ["subnet-2a3b4c5d", "subnet-3a4b5c6d"]
    vpc_id = "vpc-0f1e2d3c"
    vpc_cidr = "10.20.0.0/16"
    hosted_zone_id = "Z0123456789ABCDEFGHIJ"
    hosted_zone_name = "example.com"
    alarm_emails = ["ops@example.com"]
    image_repository = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/wheelhouse"
    image_tag = "0.1.0"
    EOF

    lint() {
      local name=$1
      shift
      ${wheelhouse-deploy}/bin/wheelhouse-deploy --config wheelhouse.example.toml "$@" \
        template -o "$name.json"
      # Informational rules (I*) come and go with the cfn-lint nixpkgs carries, so they are
      # left out (tests/template.rs holds the pinned cfn-lint to zero findings of every kind).
      # Anything else but success fails: errors (2), warnings (4), and a crash or a usage
      # error (1), which must not pass for a clean template.
      if ! cfn-lint --format parseable --ignore-checks I -- "$name.json"; then
        echo "cfn-lint failed or found errors or warnings in the $name template" >&2
        exit 1
      fi
    }

    lint example
    lint bursting --set 'efs_throughput_mode="bursting"' --set 'efs_transition_to_ia="never"' \
      --set backup=false --set dashboard=false
    lint provisioned --set 'efs_throughput_mode="provisioned"' \
      --set efs_provisioned_throughput_mibps=64 --set backup=false --set dashboard=false \
      --set 'instance_type="m7g.large"' --set container_memory=1024 \
      --set 'dns_names=["pypi", "packages.example.com"]' \
      --set 'alarm_emails=["ops@example.com", "oncall@example.com"]' \
      --set 'alarm_topic_arns=["arn:aws:sns:eu-west-1:123456789012:pager"]' \
      --set 'secret_readers=["arn:aws:iam::123456789012:role/deployer"]' \
      --set 'allowed_cidrs=["203.0.113.0/24", "2001:db8::/32"]'

    mkdir -p $out
    cp *.json $out/
  '';
in
pkgs.runCommand "wheelhouse-cfn-lint" env script
