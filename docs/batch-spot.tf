# spot-agent on AWS Batch, as Terraform (the same setup as docs/batch-spot.cfn.yaml): a spot
# compute environment and queue, an on-demand compute environment and queue the agent moves a
# job to after var.fallback_after interruptions, a log group, a least-privilege job role, and
# a job definition whose retry strategy retries interruptions and nothing else.
# tests/integration/test_batch_docs.py checks it against `spot-agent batch job-definition`.

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.0" }
  }
}

variable "name" {
  type    = string
  default = "train"
}

variable "image" {
  type        = string
  description = "The job's image, built FROM the spot-agent base image (docs/container.md)."
}

variable "subnet_ids" {
  type = list(string)
}

variable "security_group_ids" {
  type = list(string)
}

variable "checkpoint_bucket" {
  type = string
}

variable "checkpoint_prefix" {
  type    = string
  default = "spot-agent"
}

variable "stop_timeout_seconds" {
  type        = number
  default     = 120
  description = "SIGTERM to SIGKILL: ECS_CONTAINER_STOP_TIMEOUT on the hosts, SPOT_AGENT_GRACE_PERIOD in the job."
}

variable "fallback_after" {
  type        = number
  default     = 3
  description = "Interruptions of a job (across its attempts) before it goes on on on-demand capacity."
}

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

resource "aws_iam_role" "instance" {
  name = "${var.name}-batch-instance"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
  managed_policy_arns = ["arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"]
}

resource "aws_iam_instance_profile" "instance" {
  name = "${var.name}-batch-instance"
  role = aws_iam_role.instance.name
}

# IMDSv2 with a hop limit of 2 (the agent in a container sees the 2-minute spot notice) and
# the container stop timeout for SIGTERM-only stops; Batch wants MIME multi-part user data.
resource "aws_launch_template" "batch" {
  name = "${var.name}-batch"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }
  user_data = base64encode(<<-EOT
    MIME-Version: 1.0
    Content-Type: multipart/mixed; boundary="==SPOTAGENT=="

    --==SPOTAGENT==
    Content-Type: text/x-shellscript; charset="us-ascii"

    #!/bin/bash
    echo "ECS_CONTAINER_STOP_TIMEOUT=${var.stop_timeout_seconds}s" >> /etc/ecs/ecs.config

    --==SPOTAGENT==--
  EOT
  )
}

resource "aws_batch_compute_environment" "spot" {
  compute_environment_name = "${var.name}-spot"
  type                     = "MANAGED"
  state                    = "ENABLED"
  compute_resources {
    type                = "SPOT"
    allocation_strategy = "SPOT_PRICE_CAPACITY_OPTIMIZED"
    min_vcpus           = 0
    max_vcpus           = 256
    instance_type       = ["optimal"]
    subnets             = var.subnet_ids
    security_group_ids  = var.security_group_ids
    instance_role       = aws_iam_instance_profile.instance.arn
    launch_template {
      launch_template_id = aws_launch_template.batch.id
      version            = aws_launch_template.batch.latest_version
    }
  }
}

resource "aws_batch_compute_environment" "on_demand" {
  compute_environment_name = "${var.name}-on-demand"
  type                     = "MANAGED"
  state                    = "ENABLED"
  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT_PROGRESSIVE"
    min_vcpus           = 0
    max_vcpus           = 64
    instance_type       = ["optimal"]
    subnets             = var.subnet_ids
    security_group_ids  = var.security_group_ids
    instance_role       = aws_iam_instance_profile.instance.arn
    launch_template {
      launch_template_id = aws_launch_template.batch.id
      version            = aws_launch_template.batch.latest_version
    }
  }
}

resource "aws_batch_job_queue" "spot" {
  name     = "${var.name}-spot"
  state    = "ENABLED"
  priority = 1
  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.spot.arn
  }
}

resource "aws_batch_job_queue" "on_demand" {
  name     = "${var.name}-on-demand"
  state    = "ENABLED"
  priority = 1
  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.on_demand.arn
  }
}

resource "aws_cloudwatch_log_group" "jobs" {
  name              = "/spot-agent/${var.name}"
  retention_in_days = 30
}

# Least privilege for the job (docs/batch.md explains each statement).
resource "aws_iam_role" "job" {
  name = "${var.name}-job"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ecs-tasks.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

locals {
  arn      = "arn:${data.aws_partition.current.partition}"
  log_arn  = "${local.arn}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:${aws_cloudwatch_log_group.jobs.name}"
  jobdef   = "${local.arn}:batch:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:job-definition/${var.name}-job:*"
  # What `spot-agent batch job-definition --fallback-queue Q --fallback-after N
  # --continue-after-last-attempt ...` prints, in Terraform's terms.
  container = {
    image = var.image
    jobRoleArn = aws_iam_role.job.arn
    resourceRequirements = [
      { type = "VCPU", value = "2" },
      { type = "MEMORY", value = "4096" },
    ]
    linuxParameters = { initProcessEnabled = false }
    environment = [
      { name = "SPOT_AGENT_GRACE_PERIOD", value = "${var.stop_timeout_seconds}s" },
      { name = "SPOT_AGENT_IMDS", value = "auto" },
      { name = "SPOT_AGENT_CHECKPOINT_URI", value = "s3://${var.checkpoint_bucket}/${var.checkpoint_prefix}" },
      { name = "SPOT_AGENT_LOG_GROUP", value = aws_cloudwatch_log_group.jobs.name },
      { name = "SPOT_AGENT_CONTINUE_JOBS", value = "true" },
      { name = "SPOT_AGENT_FALLBACK_QUEUE", value = aws_batch_job_queue.on_demand.name },
      { name = "SPOT_AGENT_FALLBACK_AFTER", value = tostring(var.fallback_after) },
    ]
  }
}

resource "aws_iam_role_policy" "job" {
  name = "spot-agent"
  role = aws_iam_role.job.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "CheckpointObjects", Effect = "Allow", Action = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], Resource = "${local.arn}:s3:::${var.checkpoint_bucket}/${var.checkpoint_prefix}/*" },
      { Sid = "CheckpointListing", Effect = "Allow", Action = "s3:ListBucket", Resource = "${local.arn}:s3:::${var.checkpoint_bucket}", Condition = { StringLikeIfExists = { "s3:prefix" = ["${var.checkpoint_prefix}/*"] } } },
      { Sid = "Logs", Effect = "Allow", Action = ["logs:CreateLogGroup", "logs:CreateLogStream"], Resource = "${local.log_arn}:*" },
      { Sid = "LogEvents", Effect = "Allow", Action = "logs:PutLogEvents", Resource = "${local.log_arn}:log-stream:*" },
      { Sid = "DescribeItself", Effect = "Allow", Action = ["batch:DescribeJobs", "batch:DescribeJobDefinitions"], Resource = "*" },
      { Sid = "SubmitContinuation", Effect = "Allow", Action = "batch:SubmitJob", Resource = [aws_batch_job_queue.spot.arn, aws_batch_job_queue.on_demand.arn, local.jobdef] },
    ]
  })
}

resource "aws_batch_job_definition" "job" {
  name                  = "${var.name}-job"
  type                  = "container"
  platform_capabilities = ["EC2"]
  container_properties  = jsonencode(local.container)
  # Retry what an interruption looks like (75, 79, a reclaimed host) and a store that was
  # not ready at start (81), and nothing else: a real failure and exit 80 (the job went on on
  # the on-demand queue) end the job.
  retry_strategy {
    attempts = 10
    evaluate_on_exit {
      action       = "RETRY"
      on_exit_code = "75"
    }
    evaluate_on_exit {
      action       = "RETRY"
      on_exit_code = "79"
    }
    evaluate_on_exit {
      action       = "RETRY"
      on_exit_code = "81"
    }
    evaluate_on_exit {
      action           = "RETRY"
      on_status_reason = "Host EC2*"
    }
    evaluate_on_exit {
      action    = "EXIT"
      on_reason = "*"
    }
  }
}

output "job_queue" {
  value = aws_batch_job_queue.spot.arn
}

output "on_demand_job_queue" {
  value = aws_batch_job_queue.on_demand.arn
}

output "job_definition" {
  value = aws_batch_job_definition.job.arn
}
